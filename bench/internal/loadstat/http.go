package loadstat

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// StatusError is an answer with another status than the one wanted.
type StatusError struct {
	Code         int
	Status, Body string
}

func (e *StatusError) Error() string { return e.Status + ": " + e.Body }

// Call sends a JSON request (in; nil sends no body) with a bearer token
// (none when empty) and decodes a JSON answer into out (nil: drained),
// wanting status want; another status is a *StatusError.
func Call(ctx context.Context, c *http.Client, method, u, token string, in, out any, want int) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, u, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer Drain(resp.Body)
	if resp.StatusCode != want {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s %s: %w", method, u, &StatusError{Code: resp.StatusCode, Status: resp.Status, Body: string(bytes.TrimSpace(msg))})
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, u, err)
		}
	}
	return nil
}

// Drain reads what is left of a body (up to 1 MiB) and closes it, so
// that its connection is kept for the next request.
func Drain(r io.ReadCloser) {
	io.Copy(io.Discard, io.LimitReader(r, 1<<20))
	r.Close()
}
