package executor

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// pipes are an order's stdin, stdout and stderr pipes. They are made here
// rather than by os/exec so that the child's ends can belong to the
// order's user: a command run as another user reopens them by name
// (`> /dev/stderr`, `cat /dev/stdin`, that is /proc/self/fd/N), which the
// kernel checks against the pipe's owner and its mode, 0600.
//
// One goroutine serves them all, and the leader's exit too (watch): it
// waits on an epoll instance of the worker's ends and a pidfd of the
// leader, parked in the runtime's poller (loop), where os/exec's copies
// and a blocking waitid took a goroutine each, three per order of
// /bin/true, each created, parked and woken
// (docs/benchmarks.md, "The worker's work per order, counted").
type pipes struct {
	owner *syscall.Credential // the order's user; nil: the worker's own
	ends  []pipeEnds          // in room: no allocation of their own
	room  [3]pipeEnds
	bufs  *sync.Pool // lends the loop its read buffer (nil: allocate one)
	// epfd is the loop's epoll instance, -1 before watch and once the
	// loop is done with it; mu guards it against the cut (wait), which
	// adds to it from another goroutine.
	mu   sync.Mutex
	epfd int
	// epFile owns epfd once the runtime's poller waits on it (pollable).
	epFile *os.File
	// done is closed once every end is finished (read to EOF, fed,
	// failed or cut); cut and err are the loop's, read after done.
	done chan struct{}
	cut  bool
	err  error
}

// pipeEnds are one pipe: the end the child inherits and the worker's end
// (non-blocking, read or written by the loop); input says the child
// reads it (stdin), whose feed is in, else out captures it.
type pipeEnds struct {
	child *os.File
	ours  int // -1 once closed
	input bool
	in    []byte
	out   *capture
}

// Tags of the loop's epoll events beside the ends' indexes.
const (
	tagLeader = 1 << 20 // the leader's pidfd is readable: it exited
	tagCut    = 1<<20 + 1
)

func newPipes(owner *syscall.Credential, bufs *sync.Pool) *pipes {
	p := &pipes{owner: owner, bufs: bufs, epfd: -1}
	p.ends = p.room[:0]
	return p
}

// output returns the write end for the child's stdout or stderr; once the
// child runs, everything written to it goes to dst.
func (p *pipes) output(dst *capture) (*os.File, error) {
	return p.pipe(pipeEnds{out: dst})
}

// input returns the read end for the child's stdin, fed with b once the
// child runs. A child that exits without reading it all ends the feed
// (EPIPE), which is not an error.
func (p *pipes) input(b []byte) (*os.File, error) {
	return p.pipe(pipeEnds{input: true, in: b})
}

// pipe makes a pipe for e whose child's end (the read end for input) is
// blocking, as a process expects its streams, and owned by the order's
// user; the worker's end is non-blocking and in the loop's epoll
// instance, made with the first pipe.
func (p *pipes) pipe(e pipeEnds) (*os.File, error) {
	if p.epfd < 0 {
		epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			return nil, os.NewSyscallError("epoll_create1", err)
		}
		p.epfd = epfd
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	child, ours := fds[1], fds[0]
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(len(p.ends))}
	if e.input {
		child, ours = fds[0], fds[1]
		ev.Events = unix.EPOLLOUT
	}
	e.child, e.ours = os.NewFile(uintptr(child), "|order"), ours
	p.ends = append(p.ends, e)
	if err := setNonblock(ours); err != nil {
		return nil, os.NewSyscallError("fcntl", err)
	}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, ours, &ev); err != nil {
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	if p.owner != nil {
		if err := unix.Fchown(child, int(p.owner.Uid), int(p.owner.Gid)); err != nil {
			return nil, os.NewSyscallError("fchown", err)
		}
	}
	return e.child, nil
}

// watch closes the child's ends in this process (so that the child's
// exit is an EOF here) and begins the loop that copies the pipes. Given
// a pidfd of the leader (pidfd >= 0), the loop also sends the leader's
// exit to exited, as waitExitedNoReap reports it, and closes pidfd; watch
// reports whether it does. Without pipes there is no loop: the caller
// waits for the leader itself, and closes pidfd.
func (p *pipes) watch(pid, pidfd int, exited chan<- error) (leader bool) {
	for i := range p.ends {
		_ = p.ends[i].child.Close()
		p.ends[i].child = nil
	}
	if len(p.ends) == 0 {
		return false
	}
	if pidfd >= 0 {
		leader = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, pidfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: tagLeader}) == nil
	}
	if !leader {
		pidfd = -1
	}
	p.done = make(chan struct{})
	go p.loop(pid, pidfd, exited)
	return leader
}

// loop copies every end until each is finished, and watches pidfd
// (if >= 0) until the leader exits; then it closes the epoll instance.
func (p *pipes) loop(pid, pidfd int, exited chan<- error) {
	var buf *[]byte
	if p.bufs != nil {
		buf, _ = p.bufs.Get().(*[]byte)
	}
	if buf == nil {
		b := make([]byte, readBufferSize)
		buf = &b
	}
	open := len(p.ends)
	finished := false // done is closed
	var events [4]unix.EpollEvent
	// The loop waits in the runtime's poller, parked as a goroutine that
	// reads a socket is, not in a blocking epoll_wait: a thread blocked
	// in a system call has its processor taken by the runtime's monitor
	// (sysmon), which then wakes every 20 µs for a while, and the thread
	// wakes another to take it back: on the worker's one processor, for
	// every order (docs/benchmarks.md, "The worker's CPU per order,
	// profiled"). An epoll instance is readable while it has events
	// ready, so the runtime's own epoll reports it; where the runtime
	// cannot take it, the loop blocks in epoll_wait as before.
	ep := p.pollable()
	wait := func() (n int, err error) {
		if ep != nil {
			rerr := ep.Read(func(uintptr) bool {
				n, err = unix.EpollWait(p.epfd, events[:], 0)
				return n > 0 || err != nil
			})
			if rerr == nil {
				return n, err
			}
			ep = nil
		}
		return unix.EpollWait(p.epfd, events[:], -1)
	}
	for open > 0 || pidfd >= 0 {
		n, err := wait()
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			// Not expected of a valid epoll instance: end what is left
			// as the cut would, and report the leader as waitid does.
			// (Once done is closed, p.err is wait's to read.)
			if !finished {
				p.err = errors.Join(p.err, os.NewSyscallError("epoll_wait", err))
			}
			for i := range p.ends {
				if p.ends[i].ours >= 0 {
					p.finish(i)
					open--
				}
			}
			open = 0
			if !finished {
				finished = true
				close(p.done)
			}
			if pidfd >= 0 {
				exited <- waitExitedNoReap(pid)
				_ = unix.Close(pidfd)
				pidfd = -1
			}
			break
		}
		for _, ev := range events[:n] {
			switch i := int(ev.Fd); {
			case i == tagLeader:
				// Readable once the leader has exited (it is a zombie,
				// unreaped, as waitExitedNoReap leaves it): that is
				// the news, with no waitid to make.
				_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, pidfd, nil)
				exited <- nil
				_ = unix.Close(pidfd)
				pidfd = -1
			case i == tagCut:
				// The order's processes are gone and the delay passed:
				// an end still held is held by a process outside the
				// order, and its copy is cut. One nobody holds is read
				// to its end: what is left in it is the order's.
				for j := range p.ends {
					if p.ends[j].ours >= 0 && p.ends[j].held() {
						p.cut = true
						p.finish(j)
						open--
					}
				}
			case i >= 0 && i < len(p.ends) && p.ends[i].ours >= 0:
				if p.step(i, *buf) {
					p.finish(i)
					open--
				}
			}
		}
		if open == 0 && !finished {
			finished = true
			close(p.done)
		}
	}
	if p.bufs != nil {
		p.bufs.Put(buf)
	}
	p.mu.Lock()
	if p.epFile != nil {
		_ = p.epFile.Close() // the poller lets go of it, then closes it
		p.epFile = nil
	} else {
		_ = unix.Close(p.epfd)
	}
	p.epfd = -1
	p.mu.Unlock()
}

// setNonblock makes fd, a pipe end or an epoll instance this package has
// just made, non-blocking: one F_SETFL, where unix.SetNonblock reads the
// flags first (F_GETFL) to keep the others. A new pipe's or epoll
// instance's status flags are all clear (O_CLOEXEC is the descriptor's,
// and the access mode is not a status flag F_SETFL changes): one system
// call fewer for the epoll instance and for each pipe, three per order
// with both streams captured (docs/benchmarks.md, "The worker's per-order
// path, counted (hC10)").
func setNonblock(fd int) error {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, unix.O_NONBLOCK)
	return err
}

// pollable hands the epoll instance to the runtime's poller and returns
// its raw connection, whose Read fails when the poller could not take
// it; nil when it could not be made non-blocking. From then on epFile
// owns the descriptor: loop closes it through epFile.
func (p *pipes) pollable() syscall.RawConn {
	if err := setNonblock(p.epfd); err != nil {
		return nil
	}
	p.epFile = os.NewFile(uintptr(p.epfd), "epoll")
	rc, err := p.epFile.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// step does what end i is ready for: one read into buf for an output, one
// write of what is left for stdin. It reports whether the end is
// finished.
func (p *pipes) step(i int, buf []byte) bool {
	e := &p.ends[i]
	if e.input {
		n, err := unix.Write(e.ours, e.in)
		if n > 0 {
			e.in = e.in[n:]
		}
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			return false
		case err == unix.EPIPE: // the child exited without reading it all
			return true
		case err != nil:
			p.err = errors.Join(p.err, os.NewSyscallError("write", err))
			return true
		}
		return len(e.in) == 0 // then closing it is the child's EOF
	}
	// A full buffer says more is waiting: read on, a few times, then let
	// the other stream have its turn.
	for range 8 {
		n, err := unix.Read(e.ours, buf)
		switch {
		case n == len(buf):
			_, _ = e.out.Write(buf)
			continue
		case n > 0:
			_, _ = e.out.Write(buf[:n])
			return false
		case err == unix.EAGAIN || err == unix.EINTR:
			return false
		case err != nil:
			p.err = errors.Join(p.err, os.NewSyscallError("read", err))
			return true
		}
		return true // EOF
	}
	return false
}

// finish takes end i out of the loop and closes it.
func (p *pipes) finish(i int) {
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, p.ends[i].ours, nil)
	_ = unix.Close(p.ends[i].ours)
	p.ends[i].ours = -1
}

// wait waits for the copies once the order's processes are gone: the
// pipes reach EOF unless a process that escaped the group still holds
// them, so after delay the copies of pipes still held are cut short, and
// wait says so. A pipe nobody else holds any more is read to its end
// (the copy is only slow: OnOutput is busy), since what is left in it is
// the order's own output. Every end is closed when it returns.
func (p *pipes) wait(delay time.Duration) (cut bool, err error) {
	if p.done == nil { // never watched
		p.close()
		return false, nil
	}
	select {
	case <-p.done: // as for most orders: no timer to make
		return p.cut, p.err
	default:
	}
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-p.done:
		return p.cut, p.err
	case <-timer.C:
	}
	// Wake the loop for the cut: an eventfd that is readable already
	// wakes epoll_wait when it is added.
	p.mu.Lock()
	if p.epfd >= 0 {
		if fd, err := unix.Eventfd(1, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err == nil {
			// One-shot: the loop sees it once; closed once it is done.
			_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLONESHOT, Fd: tagCut})
			defer unix.Close(fd)
		}
	}
	p.mu.Unlock()
	<-p.done
	return p.cut, p.err
}

// held reports whether a process still holds the child's end of the pipe:
// for an output pipe, a writer (no POLLHUP on our read end); for stdin, a
// reader (no POLLERR on our write end). When it cannot tell, it says held.
func (e pipeEnds) held() bool {
	gone := unix.POLLHUP
	if e.input {
		gone = unix.POLLERR
	}
	fds := []unix.PollFd{{Fd: int32(e.ours)}}
	n, err := unix.Poll(fds, 0)
	return !(err == nil && n == 1 && fds[0].Revents&int16(gone) != 0)
}

// close closes every end of pipes that were never watched (the child did
// not start, or there are none), and the epoll instance.
func (p *pipes) close() {
	if p.epfd >= 0 {
		_ = unix.Close(p.epfd)
		p.epfd = -1
	}
	for i := range p.ends {
		if e := &p.ends[i]; e.child != nil {
			_ = e.child.Close()
			e.child = nil
		}
		if e := &p.ends[i]; e.ours >= 0 {
			_ = unix.Close(e.ours)
			e.ours = -1
		}
	}
}
