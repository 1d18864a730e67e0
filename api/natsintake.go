package api

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
)

// IntakeAnswer is what a NATS publisher receives on its Orderly-Reply
// subject: the accepted order, or the error envelope of the REST API.
type IntakeAnswer struct {
	Order *Order       `json:"order,omitempty"`
	Error *ErrorDetail `json:"error,omitempty"`
}

// RunNATSIntake takes orders published to orderly.submit.<host> and runs
// each through exactly the REST path: authentication from the
// Authorization header, the same decoding, validation, authorization and
// audit. Nats-Msg-Id becomes the idempotency key. It returns when ctx ends.
func (s *Server) RunNATSIntake(ctx context.Context) error {
	cons, err := s.Queue.IntakeConsumer(ctx)
	if err != nil {
		return err
	}
	it, err := cons.Messages()
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		it.Stop()
	}()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			s.logger.Warn("nats intake", "error", err)
			continue
		}
		s.intakeOne(ctx, msg)
	}
}

func (s *Server) intakeOne(ctx context.Context, msg jetstream.Msg) {
	host := strings.TrimPrefix(msg.Subject(), queue.SubmitSubject)
	hdr := msg.Headers()
	reply := hdr.Get("Orderly-Reply")
	if !validReply(reply) {
		// The answer is published with the API's own rights: a subject of
		// the publisher's choosing could write into the KV bucket or the
		// streams. Only reply inboxes are answered.
		reply = ""
	}
	answer := func(a IntakeAnswer) {
		if reply == "" {
			return
		}
		if b, err := json.Marshal(a); err == nil {
			_ = s.Queue.Conn().Publish(reply, b)
		}
	}
	var principal string
	var redacted map[string]any
	refuse := func(err error) {
		var e *order.Error
		if !errors.As(err, &e) {
			e = &order.Error{Code: order.CodeInternal, Message: "internal error"}
			s.logger.Error("nats intake", "subject", msg.Subject(), "error", err)
		}
		if e.Code == order.CodeUnavailable || e.Code == order.CodeInternal {
			// Not the publisher's fault: try again later.
			_ = msg.NakWithDelay(2 * time.Second)
			return
		}
		if redacted == nil {
			redacted = map[string]any{"subject": msg.Subject()}
		}
		s.Intake.Reject(ctx, postgres.Rejection{Principal: principal, Source: "nats", Method: "PUBLISH",
			Path: msg.Subject(), Status: statusOf(e.Code), Code: string(e.Code), Reason: e.Message, Request: redacted})
		answer(IntakeAnswer{Error: &ErrorDetail{Code: e.Code, Message: e.Message, Details: e.Details}})
		_ = msg.Ack()
	}
	p, err := s.Auth().Authenticate(hdr.Get("Authorization"))
	if err != nil {
		refuse(err)
		return
	}
	principal = p.Name
	if int64(len(msg.Data())) > s.Settings().MaxBodyBytes {
		refuse(order.Errorf(order.CodeTooLarge, "submission is larger than %d bytes", s.Settings().MaxBodyBytes))
		return
	}
	var req SubmitRequest
	if err := decodeBytes(msg.Data(), &req); err != nil {
		refuse(err)
		return
	}
	redacted = redact(&req)
	if req.Host == "" {
		req.Host = host
	}
	if req.Host != host || len(req.Hosts) > 0 {
		refuse(order.FieldError(order.CodeInvalid, "host", "the body's host must match the subject orderly.submit.<host>"))
		return
	}
	o, err := req.toOrder(time.Now())
	if err != nil {
		refuse(err)
		return
	}
	o.Source = "nats"
	o.IdempotencyKey = hdr.Get("Nats-Msg-Id")
	stored, err := s.Intake.Submit(ctx, p, o)
	var np *intake.ErrNotPublished
	if err != nil && !errors.As(err, &np) {
		refuse(err)
		return
	}
	resp := toResponse(stored)
	answer(IntakeAnswer{Order: &resp})
	_ = msg.Ack()
}

// ReplyPrefixes are the subject prefixes an Orderly-Reply may use: the
// conventional NATS inbox and orderly's own reply space.
var replyPrefixes = []string{"_INBOX.", "orderly.reply."}

// validReply accepts a concrete subject under a reply prefix: no
// wildcards, no empty tokens, no spaces or control bytes.
func validReply(s string) bool {
	if len(s) == 0 || len(s) > 256 {
		return false
	}
	ok := false
	for _, p := range replyPrefixes {
		if strings.HasPrefix(s, p) && len(s) > len(p) {
			ok = true
		}
	}
	if !ok {
		return false
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f || c == '*' || c == '>' {
			return false
		}
	}
	return true
}
