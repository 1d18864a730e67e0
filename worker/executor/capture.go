package executor

import (
	"bytes"
	"crypto/sha256"
	"hash"
	"math"
	"sync"
	"unicode/utf8"

	"github.com/orderly-run/orderly/internal/order"
)

// capture is the io.Writer behind one captured stream. It keeps the first
// half and the last half of the cap (the tail in a ring buffer), counts and
// hashes every byte, and so holds at most the cap in memory whatever the
// process prints, while Bytes and SHA256 still describe the full stream.
// The pipes' loop calls Write from one goroutine; mu is for readAt, which
// the worker's live output reads the stream with while it is written.
type capture struct {
	stream   string
	onOutput func(stream string, p []byte)
	headMax  int
	tailMax  int
	// mu guards kept, pos and n against readAt: record writes them under
	// it, readAt reads them under it, so the ring's bytes are never
	// read while they are overwritten.
	mu sync.Mutex
	// kept holds the head, kept[:headMax], then the tail: the latest bytes
	// after the head. One buffer, so that a stream within the cap is its
	// own content, not copied again (output). The tail fills in order until
	// len(kept) == headMax+tailMax; from then on kept[headMax:] is a ring
	// whose oldest byte is at pos. While it is filling, pos is 0.
	kept []byte
	pos  int
	n    int64
	sum  hash.Hash
	// spill holds the kept bytes in place of kept (then nil; spill.size
	// is their length) from when they would pass spillFrom, if spillDir
	// is set and the cap is larger than spillFrom: written to the file
	// and read back from it (readAt, output), never held in memory.
	// spillDir is cleared once the spill was tried.
	spillDir string
	spill    *Spill
	// secrets are masked wherever the stream shows them (masked): held is
	// the stream's last bytes that may begin one, kept back until the
	// next write or the end (flush) tells; scratch is the buffer a write
	// is masked in.
	secrets       [][]byte
	held, scratch []byte
	spans, carry  [][2]int // of masked: where masks start and end
}

// Captured reads a Run's captured streams while the process writes them
// (Request.Captured): what the executor holds for the result, the whole
// stream up to the cap and past it its head and its latest bytes. The
// worker's live output publishes a running order's output again from it
// after a NATS restart (queue.LiveOutput), rather than keep a copy of
// every chunk. The zero value holds nothing.
type Captured struct {
	// Set by Run before the process starts, so before the first OnOutput:
	// a reader that began with one sees them.
	stdout, stderr *capture
}

// ReadOutput copies to p the bytes of stream ("stdout" or "stderr") from
// offset off on, as many in a row as the capture holds and p takes, and
// returns the offset of the first one copied (past off when the capture
// no longer holds the bytes from off) and how many (readAt). Safe while
// the process writes the stream, and after Run returned.
func (c *Captured) ReadOutput(stream string, off int64, p []byte) (from int64, n int) {
	cp := c.stdout
	if stream == "stderr" {
		cp = c.stderr
	}
	if cp == nil {
		return off, 0
	}
	return cp.readAt(p, off)
}

// tokenPrefix is what of a delegated runbook token stays as it is when
// it is masked, so that a reader sees what was there; other secrets are
// masked whole.
const tokenPrefix = "orderly-rb-"

// growFullFrom is the kept size past which a capture's buffer grows
// straight to the cap (appendCapped): the size from which the result write
// streams an output too (internal/postgres stageOutputsFrom). It does so
// only for a cap up to growFullTo: with a larger worker.max_output_bytes a
// 2 MiB output must not take the whole cap at once.
const (
	growFullFrom = 1 << 20
	growFullTo   = 16 << 20
)

// readBufferSize is the size of one read from a pipe. Pipes hold 64 KiB by
// default; about half of that keeps the copy loop short without idling
// memory. It is queue.LiveChunkMax, 512 bytes short of 32 KiB, because
// each read is published as one live chunk, which the live stream holds
// with its headers in one allocation: at 32 KiB that allocation took 40
// KiB (TestPipeReadsFitALiveChunk).
const readBufferSize = 32<<10 - 512

// newCapture returns a capture keeping at most maxKept bytes of stream,
// split into maxKept/2 bytes of head and the rest of tail, so an odd cap is
// used in full. A maxKept of zero or less keeps nothing.
func newCapture(stream string, maxKept int64, onOutput func(string, []byte)) *capture {
	limit := int(min(max(maxKept, 0), math.MaxInt))
	return &capture{
		stream:   stream,
		onOutput: onOutput,
		headMax:  limit / 2,
		tailMax:  limit - limit/2,
		sum:      sha256.New(),
	}
}

// Write records p. It never fails, so the process is never stopped by a
// full capture: past the cap, bytes are counted and hashed, not kept.
func (c *capture) Write(p []byte) (int, error) {
	if len(c.secrets) > 0 {
		if m := c.masked(p, false); len(m) > 0 {
			c.record(m)
		}
		return len(p), nil
	}
	c.record(p)
	return len(p), nil
}

// masked returns what of the stream, up to p, can be recorded: the bytes
// held back before, then p, with every secret in them masked by *, and
// without a last part that may begin a secret, held back unless the
// stream ended (last). The mask keeps the length, so counts, offsets and
// the cap are those of the stream as printed. Occurrences are found in
// the bytes as written, so secrets that overlap are masked in full; the
// part of one that lies in what is held back (carry) is masked when it is
// sent, since it will not be found whole again. Nothing is held back for
// an occurrence: what is held is shorter than the longest secret.
func (c *capture) masked(p []byte, last bool) []byte {
	b := append(append(c.scratch[:0], c.held...), p...)
	c.scratch = b
	cut := len(b)
	if !last {
		for _, secret := range c.secrets {
			for n := min(len(secret)-1, len(b)); n > len(b)-cut; n-- {
				if bytes.HasPrefix(secret, b[len(b)-n:]) {
					cut = len(b) - n
					break
				}
			}
		}
	}
	spans := append(c.spans[:0], c.carry...)
	for _, secret := range c.secrets {
		from := 0
		if bytes.HasPrefix(secret, []byte(tokenPrefix)) {
			from = len(tokenPrefix)
		}
		for i := 0; ; i++ {
			j := bytes.Index(b[i:], secret)
			if j < 0 {
				break
			}
			i += j
			spans = append(spans, [2]int{i + from, i + len(secret)})
		}
	}
	c.spans, c.carry = spans, c.carry[:0]
	for _, sp := range spans {
		for k := sp[0]; k < min(sp[1], cut); k++ {
			b[k] = '*'
		}
		if sp[1] > cut {
			c.carry = append(c.carry, [2]int{max(sp[0], cut) - cut, sp[1] - cut})
		}
	}
	c.held = append(c.held[:0], b[cut:]...)
	return b[:cut]
}

// flush records what masked held back, masked: the stream has ended.
func (c *capture) flush() {
	if len(c.held) > 0 {
		out := c.masked(nil, true)
		c.held = c.held[:0]
		c.record(out)
	}
}

// record keeps p, the stream's next bytes, as the stream's own, then
// hands them to onOutput: what onOutput is given, readAt finds (until the
// ring overwrites it).
func (c *capture) record(p []byte) {
	c.sum.Write(p)
	c.keep(p)
	if c.onOutput != nil {
		c.onOutput(c.stream, p)
	}
}

// keep counts p and keeps what of it fits: the head, then the ring.
func (c *capture) keep(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n += int64(len(p))
	q := p
	limit := c.headMax + c.tailMax
	if room := limit - c.keptLen(); room > 0 {
		k := min(room, len(q))
		c.appendKept(q[:k], limit)
		q = q[k:]
	}
	if len(q) == 0 || c.tailMax == 0 {
		return
	}
	if len(q) >= c.tailMax {
		// q alone fills the ring: keep its last tailMax bytes, in order.
		c.put(c.headMax, q[len(q)-c.tailMax:])
		c.pos = 0
		return
	}
	for len(q) > 0 { // the ring is full: overwrite the oldest bytes
		k := min(c.tailMax-c.pos, len(q))
		c.put(c.headMax+c.pos, q[:k])
		q = q[k:]
		c.pos = (c.pos + k) % c.tailMax
	}
}

// keptLen is how many bytes the capture keeps: len(kept), or the spill's.
func (c *capture) keptLen() int {
	if c.spill != nil {
		return int(c.spill.size)
	}
	return len(c.kept)
}

// appendKept keeps p after what is kept, at most limit bytes in all. The
// kept bytes move to a spill file once they would pass spillFrom, when
// the cap is larger (a smaller stream stays in memory: most orders print
// little, and a file costs a few system calls).
func (c *capture) appendKept(p []byte, limit int) {
	if c.spill == nil && c.spillDir != "" && limit > spillFrom && len(c.kept)+len(p) > spillFrom {
		if s, err := openSpill(c.spillDir); err == nil {
			if _, err := s.f.WriteAt(c.kept, 0); err == nil {
				s.size = int64(len(c.kept))
				c.spill, c.kept = s, nil
			} else {
				_ = s.Close()
			}
		}
		// Tried once: a stream that could not spill (no O_TMPFILE
		// there, a full disk) stays in memory, as before spilling.
		c.spillDir = ""
	}
	if c.spill == nil {
		c.kept = appendCapped(c.kept, p, limit)
		return
	}
	off := int(c.spill.size)
	c.spill.size += int64(len(p)) // first: a failed put reads it all back
	c.put(off, p)
}

// put writes p over the kept bytes at off (up to their end).
func (c *capture) put(off int, p []byte) {
	if c.spill == nil {
		copy(c.kept[off:], p)
		return
	}
	if _, err := c.spill.f.WriteAt(p, int64(off)); err != nil {
		c.unspill()
		copy(c.kept[off:], p)
	}
}

// unspill reads the spilled bytes back into memory, after a write to the
// file failed (its disk full): the stream goes on kept in memory, as it
// would have without the file. Bytes the file cannot give back stay
// zero; the stream's hash (SHA256) still says what it printed.
func (c *capture) unspill() {
	s := c.spill
	c.spill = nil
	c.kept = make([]byte, s.size, c.headMax+c.tailMax)
	_, _ = s.ReadAt(c.kept, 0)
	_ = s.Close()
}

// get copies the kept bytes at off to p, as many as p takes up to their
// end, and returns how many.
func (c *capture) get(p []byte, off int) int {
	if c.spill == nil {
		return copy(p, c.kept[off:])
	}
	n := min(len(p), int(c.spill.size)-off)
	if n <= 0 {
		return 0
	}
	if _, err := c.spill.ReadAt(p[:n], int64(off)); err != nil {
		return 0
	}
	return n
}

// readAt copies to p the bytes of the stream from offset off on that the
// capture holds in a row, as many as p takes, and returns the offset of
// the first one copied and how many. Up to the cap the capture holds the
// whole stream; past it, the head (the first headMax bytes) and the ring
// (the latest tailMax), and bytes between them are skipped: from is then
// where the ring starts now, the place of output's truncation marker.
// 0 bytes: none from off on (yet). Safe while Write runs; the copy is
// made under mu, so no byte of it is one being overwritten.
func (c *capture) readAt(p []byte, off int64) (from int64, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if kept := int64(c.keptLen()); c.n == kept {
		// All of the stream, in order (the ring has not turned: pos is 0).
		if off >= kept {
			return off, 0
		}
		return off, c.get(p, int(off))
	}
	if off < int64(c.headMax) {
		return off, c.get(p[:min(int64(len(p)), int64(c.headMax)-off)], int(off))
	}
	// The ring holds the stream's last tailMax bytes, the oldest at pos.
	start := c.n - int64(c.tailMax)
	from = max(off, start)
	if from >= c.n {
		return from, 0
	}
	i := (c.pos + int(from-start)) % c.tailMax
	if i < c.pos {
		return from, c.get(p[:min(len(p), c.pos-i)], c.headMax+i)
	}
	n = c.get(p[:min(len(p), c.tailMax-i)], c.headMax+i)
	if n < len(p) {
		n += c.get(p[n:min(len(p), n+c.pos)], c.headMax)
	}
	return from, n
}

// output returns the stream as recorded: all of it when it fit in the cap
// (the capture's own buffer: the capture is done with it), otherwise head,
// truncation marker and tail.
//
// A spilled stream that fit in the cap stays in its file: its Content is
// nil and spilled returns the file, which the result write reads it from.
// One past the cap is read back here to be cut (head, marker, tail), and
// its file closed.
func (c *capture) output() order.Output {
	c.flush()
	out := order.Output{Bytes: c.n, SHA256: c.sum.Sum(nil)}
	omitted := c.n - int64(c.keptLen())
	if omitted == 0 {
		if len(c.kept) > 0 {
			out.Content = c.kept
		}
		return out
	}
	if c.spill != nil {
		c.mu.Lock()
		c.unspill()
		c.mu.Unlock()
	}
	// The stream went past the cap, so kept is full and its tail a ring:
	// the tail in order is ring[pos:] then ring[:pos]. Text cut inside a
	// character would no longer be UTF-8, and the answer would then carry
	// the whole output as base64: the cuts move to the characters' edges
	// when that makes the kept bytes text; other bytes are kept as cut.
	head, ring := c.kept[:c.headMax], c.kept[c.headMax:]
	content := make([]byte, 0, len(c.kept)+len(order.TruncationMarker(c.n)))
	content = joinCut(content, c.n, head, ring[c.pos:], ring[:c.pos], true)
	if !utf8.Valid(content) {
		content = joinCut(content[:0], c.n, head, ring[c.pos:], ring[:c.pos], false)
	}
	out.Content, out.Truncated = content, true
	return out
}

// spilled is the file that holds the stream's content when output left it
// there (Content nil), else nil.
func (c *capture) spilled() *Spill {
	if c.n != int64(c.keptLen()) {
		return nil
	}
	return c.spill
}

// joinCut appends to dst the head of a stream of total bytes, the marker
// and its tail (a, then b). With atEdges a cut inside a UTF-8 character
// moves to its edge first; the marker counts every byte left out.
func joinCut(dst []byte, total int64, head, a, b []byte, atEdges bool) []byte {
	if atEdges {
		head = head[:len(head)-partialRuneAtEnd(head)]
		skip := continuationBytesAtStart(a, b)
		d := min(skip, len(a))
		a, b = a[d:], b[skip-d:]
	}
	dst = append(dst, head...)
	dst = append(dst, order.TruncationMarker(total-int64(len(head)+len(a)+len(b)))...)
	return append(append(dst, a...), b...)
}

// partialRuneAtEnd is the length of the UTF-8 sequence that b ends with
// when it is cut short (a lead byte and fewer continuation bytes than it
// announces), else 0.
func partialRuneAtEnd(b []byte) int {
	for n := 1; n < utf8.UTFMax && n <= len(b); n++ {
		if end := b[len(b)-n:]; utf8.RuneStart(end[0]) {
			if utf8.FullRune(end) {
				return 0
			}
			return n
		}
	}
	return 0
}

// continuationBytesAtStart is the number of UTF-8 continuation bytes, at
// most three, that a followed by b starts with: the rest of a character
// cut in two.
func continuationBytesAtStart(a, b []byte) int {
	n := 0
	for _, p := range [2][]byte{a, b} {
		for _, c := range p {
			if n == utf8.UTFMax-1 || utf8.RuneStart(c) {
				return n
			}
			n++
		}
	}
	return n
}

// appendCapped appends p to b, growing b geometrically but never beyond a
// capacity of limit, so that a buffer's memory stays within its share of
// the cap (append alone may round capacity up past it). Past growFullFrom
// it grows straight to limit: doubling up to a 10 MiB cap leaves as much
// garbage as the content (1+2+4+8 MiB) just when the worker holds the
// most, and cost serve ~8 MiB of peak RSS in a `?wait` on a 10 MiB order
// (docs/benchmarks.md). The cap is what a stream may hold anyway; a stream
// past 1 MiB now holds it until its result is written (a cap above
// growFullTo keeps doubling).
func appendCapped(b, p []byte, limit int) []byte {
	if need := len(b) + len(p); need > cap(b) {
		size := min(max(2*cap(b), need, 512), limit)
		if need > growFullFrom && limit <= growFullTo {
			size = limit
		}
		nb := make([]byte, len(b), size)
		copy(nb, b)
		b = nb
	}
	return append(b, p...)
}
