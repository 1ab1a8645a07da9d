package action

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// attemptTimeout bounds each attempt of a call to GitHub (one request and
// its answer, body included), so that a stalled connection fails the
// attempt, which the transport then tries again, instead of holding the
// step until the job's timeout. GitHub itself ends a REST request that
// takes more than 10 s.
type attemptTimeout struct {
	base    http.RoundTripper
	timeout time.Duration
}

func (t attemptTimeout) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(req.Context(), t.timeout)
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		if req.Context().Err() == nil && ctx.Err() != nil {
			err = fmt.Errorf("no answer from GitHub within %s: %w", t.timeout, err)
		}
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelOnClose is an answer's body whose attempt ends when it is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
