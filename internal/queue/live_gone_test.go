package queue_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestLiveFeedKeepsItsPlaceWhenItsLastMessageIsGone: the message a feed
// handed over last is no longer in the stream (freed by the order's
// end, aged out, removed) when its consumer has to be made again on the
// same stream. renewed reads that sequence back to tell a stream a whole
// cluster's restart made again; a message not found there says nothing
// either way, so the feed makes its consumer again after it and hands
// the next chunk over, no LiveLost, and does not take the not-found
// answer for an error to try again forever.
func TestLiveFeedKeepsItsPlaceWhenItsLastMessageIsGone(t *testing.T) {
	q, _ := openQueue(t, queue.Options{})
	ctx := testenv.Context(t)
	id := uuid.New()
	if err := q.PublishOutput("h1", id, "stdout", 0, []byte("seen\n")); err != nil {
		t.Fatal(err)
	}
	if err := q.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	take, st := followPastSeen(t, ctx, q, id)
	last, err := st.GetLastMsgForSubject(ctx, queue.OutputSubjectOf("h1", id))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, last.Sequence); err != nil {
		t.Fatal(err)
	}
	deleteConsumers(t, ctx, st)
	if err := q.PublishOutput("h1", id, "stdout", 5, []byte("new\n")); err != nil {
		t.Fatal(err)
	}
	if m := take("the chunk after the restart"); m == queue.LiveLost || string(m.Data) != "new\n" {
		t.Errorf("after its consumer's restart with its last message gone the feed handed over %q (LiveLost: %v), want %q",
			m.Data, m == queue.LiveLost, "new\n")
	}
}
