package order

import "io/fs"

// Script is what an order of kind script runs: a runbook's script body
// and its input files, carried by the order itself so that the worker
// needs no filesystem shared with the API (the runbook may live on the
// API host only). Body and Files are pending inputs like Env values and
// Stdin: stored until the order is terminal, then erased; Runbook and
// SHA256 stay as history of what ran.
type Script struct {
	Runbook string // the runbook's file name
	SHA256  string // hex SHA-256 of the runbook text the script came from
	Body    []byte
	Files   []File
}

// File is one input file of a script order.
type File struct {
	Path string      `json:"path"` // relative to the run's directory, forward slashes
	Mode fs.FileMode `json:"mode"` // permission bits
	Data []byte      `json:"data"`
}

// Size is the number of bytes the script and its files carry.
func (s *Script) Size() int {
	n := len(s.Body)
	for _, f := range s.Files {
		n += len(f.Path) + len(f.Data)
	}
	return n
}
