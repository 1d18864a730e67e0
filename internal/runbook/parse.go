// Package runbook reads runbooks: markdown files in the stage0 layout (an H1
// name, then H1 sections Environment Requirements, File System
// Requirements, optional Required Claims, Script and History). It parses
// and validates them, judges a principal's claims against their Required
// Claims and sanitises the environment a run is given. It runs nothing:
// a runbook runs as an ordinary order of kind script (DESIGN §6).
package runbook

import (
	"crypto/sha256"
	"encoding/hex"
	"path"
	"slices"
	"strings"
)

// The sections of a runbook, named exactly as their H1 lines spell them.
const (
	SectionEnv     = "Environment Requirements"
	SectionFiles   = "File System Requirements"
	SectionClaims  = "Required Claims"
	SectionScript  = "Script"
	SectionHistory = "History"
)

// requiredSections are checked in this order, so the first problem
// reported is the same every time.
var requiredSections = []string{SectionEnv, SectionFiles, SectionScript, SectionHistory}

// knownSections are the sections the parser reads; any other H1 is free
// text.
var knownSections = []string{SectionEnv, SectionFiles, SectionClaims, SectionScript, SectionHistory}

// Runbook is one parsed runbook file. A runbook with Problems must not
// run; Warnings are worth showing but do not stop it.
type Runbook struct {
	File   string // the file name inside runbooks.dir
	Name   string // the text of the leading "# " line
	SHA256 string // hex SHA-256 of the whole file: what an order records it ran
	Text   []byte
	// Sections holds the text of each H1 section by name, without its
	// heading line.
	Sections map[string]string
	Env      []EnvVar // in file order
	Inputs   []string // paths relative to the runbook's directory, as written
	Claims   []Claim  // in file order
	Script   string   // the body of the first sh block
	Problems []Problem
	Warnings []string
}

// EnvVar is one variable a runbook requires.
type EnvVar struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

// Claim is one required claim and the values that satisfy it.
type Claim struct {
	Name    string   `json:"name"`
	Allowed []string `json:"allowed"`
}

// Parse reads the runbook text of file. It never fails: what is wrong
// with the text is in Problems, each with a stable code and, where stage0
// had one, stage0's exact message.
func Parse(file string, text []byte) *Runbook {
	sum := sha256.Sum256(text)
	rb := &Runbook{File: file, SHA256: hex.EncodeToString(sum[:]), Text: text, Sections: map[string]string{}}
	s := strings.ReplaceAll(strings.ReplaceAll(string(text), "\r\n", "\n"), "\r", "\n")
	if strings.TrimSpace(s) == "" {
		rb.problem(CodeEmpty, "Runbook content is empty")
		return rb
	}
	lines := strings.Split(s, "\n")
	name, ok := heading(lines[0])
	if !ok || name == "" {
		// stage0 reported this after deciding the runbook was valid, and
		// ran it anyway; here it is a problem like any other.
		rb.problem(CodeNoTitle, "Runbook must start with a '# <name>' line")
	}
	rb.Name = name
	if stem := strings.TrimSuffix(file, path.Ext(file)); ok && name != "" && name != stem {
		rb.Warnings = append(rb.Warnings, "Runbook name '"+name+"' does not match filename '"+stem+"'")
	}
	rb.split(lines[1:])
	for _, sec := range requiredSections {
		body, found := rb.Sections[sec]
		switch {
		case !found:
			rb.problem(CodeMissingSection, "Missing required section: "+sec)
		case sec != SectionHistory && strings.TrimSpace(body) == "":
			// History starts out empty: it is where stage0 appended runs.
			rb.problem(CodeEmptySection, "Section '"+sec+"' is empty")
		}
	}
	rb.parseEnv()
	rb.parseFiles()
	rb.parseClaims()
	rb.parseScript()
	return rb
}

// heading returns the title of an H1 line ("# Name").
func heading(line string) (string, bool) {
	title, ok := strings.CutPrefix(line, "# ")
	if !ok {
		return "", false
	}
	return strings.TrimSpace(title), true
}

// split cuts lines into H1 sections. A "# " line inside a fenced code
// block is not a heading (a shell comment in the script), so fences are
// tracked; a fence still open at the end of the file is a problem, since
// stage0 and this parser would then disagree on where the script ends.
func (rb *Runbook) split(lines []string) {
	var (
		current string
		body    []string
		inside  bool
		have    bool
	)
	flush := func() {
		if !have {
			return
		}
		if _, dup := rb.Sections[current]; !dup {
			rb.Sections[current] = strings.Join(body, "\n")
		} else if slices.Contains(knownSections, current) {
			// Only the first is read: a second Required Claims (or
			// Script) would be ignored while it reads as part of the
			// runbook.
			rb.problem(CodeDupSection, "Section '"+current+"' appears more than once")
		}
	}
	for _, l := range lines {
		if isFence(l) {
			inside = !inside
		}
		if !inside {
			if title, ok := heading(l); ok {
				flush()
				current, body, have = title, nil, true
				continue
			}
		}
		body = append(body, l)
	}
	flush()
	if inside {
		rb.problem(CodeUnclosedFence, "A code block is not closed: a line of ``` is missing")
	}
}

// isFence reports a line that opens or closes a fenced code block.
func isFence(line string) bool {
	return strings.HasPrefix(strings.TrimLeft(line, " "), "```")
}

// block returns the body of the first fenced block of section whose info
// string is lang, and what follows its closing fence.
func block(section, lang string) (body, rest string, ok bool) {
	lines := strings.Split(section, "\n")
	for i, l := range lines {
		info, isOpen := strings.CutPrefix(strings.TrimLeft(l, " "), "```")
		if !isOpen || strings.TrimSpace(info) != lang {
			continue
		}
		for j := i + 1; j < len(lines); j++ {
			if isFence(lines[j]) {
				return strings.Join(lines[i+1:j], "\n"), strings.Join(lines[j+1:], "\n"), true
			}
		}
		return strings.Join(lines[i+1:], "\n"), "", true
	}
	return "", "", false
}

func (rb *Runbook) problem(code Code, msg string) {
	rb.Problems = append(rb.Problems, Problem{Code: code, Message: msg})
}

// Valid reports whether the runbook has no problems.
func (rb *Runbook) Valid() bool { return len(rb.Problems) == 0 }
