package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"github.com/orderly-run/orderly/internal/order"
)

// encode writes v as JSON with status.
func encode(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// maxJSONDepth bounds nesting so a hostile body cannot make the decoder
// recurse deeply.
const maxJSONDepth = 32

// decode reads a JSON body strictly: the right content type, within the
// size limit, no unknown fields, no duplicate keys, no trailing data.
func decode(r *http.Request, maxBytes int64, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && mt != "application/merge-patch+json") {
			return order.Errorf(order.CodeUnsupportedType, "Content-Type must be application/json")
		}
	} else {
		return order.Errorf(order.CodeUnsupportedType, "Content-Type must be application/json")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBytes+1))
	if err != nil {
		return order.Errorf(order.CodeInvalid, "read body: %v", err)
	}
	if int64(len(body)) > maxBytes {
		return &order.Error{Code: order.CodeTooLarge, Message: fmt.Sprintf("request body is larger than %d bytes", maxBytes),
			Details: map[string]any{"limit": maxBytes}}
	}
	return decodeBytes(body, v)
}

// decodeBytes is decode's JSON half, shared with the NATS intake.
func decodeBytes(body []byte, v any) error {
	if err := checkJSON(body); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return order.Errorf(order.CodeInvalid, "invalid JSON: %s", jsonProblem(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return order.Errorf(order.CodeInvalid, "invalid JSON: trailing data after the object")
	}
	return nil
}

// checkJSON walks the token stream once to refuse what encoding/json would
// silently accept: duplicate keys (last one wins there) and deep nesting.
func checkJSON(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	type frame struct {
		object    bool
		keys      map[string]struct{}
		expectKey bool
	}
	var stack []frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			if len(stack) != 0 {
				return order.Errorf(order.CodeInvalid, "invalid JSON: unexpected end")
			}
			return nil
		}
		if err != nil {
			return order.Errorf(order.CodeInvalid, "invalid JSON: %s", jsonProblem(err))
		}
		top := len(stack) - 1
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				if top >= 0 && stack[top].object {
					stack[top].expectKey = true
				}
				if len(stack) >= maxJSONDepth {
					return order.Errorf(order.CodeInvalid, "invalid JSON: nested deeper than %d levels", maxJSONDepth)
				}
				stack = append(stack, frame{object: d == '{', expectKey: true})
			default:
				stack = stack[:top]
			}
			continue
		}
		if top >= 0 && stack[top].object {
			if stack[top].expectKey {
				key := tok.(string)
				if stack[top].keys == nil {
					stack[top].keys = map[string]struct{}{}
				}
				if _, dup := stack[top].keys[key]; dup {
					return order.Errorf(order.CodeInvalid, "invalid JSON: duplicate key %q", key)
				}
				stack[top].keys[key] = struct{}{}
				stack[top].expectKey = false
			} else {
				stack[top].expectKey = true
			}
		}
		if top < 0 {
			// A scalar at top level: let the typed decode explain.
			if _, err := dec.Token(); err != io.EOF {
				return order.Errorf(order.CodeInvalid, "invalid JSON: trailing data")
			}
			return nil
		}
	}
}

// jsonProblem turns a decoder error into text that names the field.
func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %q must be %s, not %s", te.Field, te.Type.String(), te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s at offset %d", se.Error(), se.Offset)
	}
	return err.Error()
}
