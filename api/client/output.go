package client

import (
	"fmt"
	"io"

	"github.com/orderly-run/orderly/internal/order"
)

// decode decodes content in its encoding (nil for text, "base64" or
// "base85").
func decode(content string, encode *string) ([]byte, error) {
	enc := order.EncodeText
	if encode != nil {
		enc = order.Encoding(*encode)
	}
	b, err := order.Decode(content, enc)
	if err != nil {
		return nil, fmt.Errorf("decode %s output: %w", enc, err)
	}
	return b, nil
}

// Decode returns the stream's kept bytes.
func (s Stream) Decode() ([]byte, error) { return decode(s.Content, s.Encode) }

// Decode returns the chunk's bytes.
func (c Chunk) Decode() ([]byte, error) { return decode(c.Data, c.Encode) }

// EncodeStdin is standard input of any bytes in encoding ("base64" or
// "base85"; anything else is base64): JSON strings cannot carry every byte.
func EncodeStdin(b []byte, encoding string) *StreamIn {
	wire := order.EncodeBase64
	if encoding == string(order.EncodeBase85) {
		wire = order.EncodeBase85
	}
	content, enc := order.Encode(b, wire)
	e := string(enc)
	return &StreamIn{Content: content, Encode: &e}
}

// WriteOutput writes a finished order's stored stdout and stderr to the
// writers (nil discards), as raw bytes.
func WriteOutput(o *Order, stdout, stderr io.Writer) error {
	if o.Result == nil {
		return nil
	}
	for i, w := range []io.Writer{stdout, stderr} {
		s := []Stream{o.Result.Stdout, o.Result.Stderr}[i]
		if w == nil || s.Content == "" {
			continue
		}
		b, err := s.Decode()
		if err != nil {
			return fmt.Errorf("order %s: %w", o.ID, err)
		}
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
	}
	return nil
}
