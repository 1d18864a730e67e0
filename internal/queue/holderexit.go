package queue

import "context"

// ExitWatchers is what Owners may do besides ExitedOwners: wait until
// host's owner is instance and its process is known to have exited, and
// return nil then, or ctx's error once ctx ends first.
//
// A standby waits on it for the holder of the key it was refused, and
// tries the key at once when it returns: a standby of a holder that died
// on its machine waited the lease out, though a worker restarted there
// takes the key at once (TestStandbyTakesTheHostOfAHolderThatDiesAtOnce).
// The try is the one that follows every refusal: the owner read again
// and judged exited (ExitedOwners), and a write conditioned on the
// revision read.
type ExitWatchers interface {
	AwaitOwnerExit(ctx context.Context, host, instance string) error
}

// holderExit is a standby's watch of its holder's process
// (ExitWatchers), one holder at a time, owned by the wait (acquire),
// which stops it.
type holderExit struct {
	holder string
	exited chan struct{} // closed once the holder's process has exited
	spent  bool          // the try its exit woke was made (tried)
	cancel context.CancelFunc
	done   chan struct{}
}

// watch watches holder's process, if owners can (ExitWatchers), unless
// it already does.
func (x *holderExit) watch(ctx context.Context, owners Owners, host, holder string) {
	ew, ok := owners.(ExitWatchers)
	if !ok || x.cancel != nil && x.holder == holder {
		return
	}
	x.stop()
	wctx, cancel := context.WithCancel(ctx)
	exited, done := make(chan struct{}), make(chan struct{})
	x.holder, x.exited, x.spent, x.cancel, x.done = holder, exited, false, cancel, done
	go func() {
		defer close(done)
		if ew.AwaitOwnerExit(wctx, host, holder) == nil {
			close(exited)
		}
	}()
}

// wake is closed once the watched holder's process has exited, until
// the try it woke is made (tried); nil while none is watched.
func (x *holderExit) wake() <-chan struct{} {
	if x.spent {
		return nil
	}
	return x.exited
}

// tried says that the key is being tried: a watch that saw its holder's
// exit has woken this try, and wakes no other. A try that does not take
// (beaten, or the owner read judged otherwise) leaves the wait to the
// lease, as before the watch; a woken wait that tried nothing, waking
// again at once, would send requests in a loop until the lease's end.
func (x *holderExit) tried() {
	if x.cancel == nil {
		return
	}
	select {
	case <-x.exited:
		x.spent = true
	default:
	}
}

// stop ends the watch, if any, and waits for it.
func (x *holderExit) stop() {
	if x.cancel == nil {
		return
	}
	x.cancel()
	<-x.done
	x.cancel = nil
}
