package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/s2"
)

// Deliveries' bodies are kept compressed, in Snappy's framing format
// (github.com/google/snappy, framing_format.txt: chunks of at most 64 KB,
// each with a CRC-32C of its data), which any Snappy stream decoder reads:
// a push of 8 KB keeps 2.5 KB, so a delivery takes half the room it did in
// the database file, and an intake commit writes a quarter less (the
// indexes' pages are the rest). A body that compression would not halve,
// and every body stored before lastmile compressed them, is kept as
// received: GitHub's bodies are JSON, which never begins
// with the framing format's first byte (0xff).

// snappyStream begins every compressed body: the format's stream identifier.
const snappyStream = "\xff\x06\x00\x00sNaPpY"

// minPackedBody is the smallest body worth compressing.
const minPackedBody = 128

// maxUnpackedBody bounds what a compressed body may unpack to: GitHub caps
// a delivery at 25 MB, so more is a damaged record, not a reason to
// allocate it.
const maxUnpackedBody = 32 << 20

var (
	packers = sync.Pool{New: func() any {
		return s2.NewWriter(nil, s2.WriterSnappyCompat(), s2.WriterConcurrency(1))
	}}
	// Snappy's chunks hold at most 64 KB.
	unpackers = sync.Pool{New: func() any { return s2.NewReader(nil, s2.ReaderMaxBlockSize(64<<10)) }}
)

// packBody returns the form in which body is kept: compressed when that
// halves it at least (GitHub's JSON keeps a third or less), as received
// otherwise. Beside body it holds one buffer of half its size at most —
// memory the webhook's budget for bodies held at once does not count — and
// nothing once it returns.
func packBody(body []byte) []byte {
	if len(body) < minPackedBody {
		return body
	}
	out := &smallerThan{limit: len(body) / 2}
	w := packers.Get().(*s2.Writer)
	defer func() {
		w.Reset(nil) // the pool keeps no output
		packers.Put(w)
	}()
	w.Reset(out)
	if _, err := w.Write(body); err != nil {
		return body
	}
	if err := w.Close(); err != nil {
		return body
	}
	return out.buf
}

// smallerThan collects bytes while they are fewer than limit, and refuses
// the write that would reach it: compression gives up as soon as it would
// not pay.
type smallerThan struct {
	buf   []byte
	limit int
}

var errNoSmaller = errors.New("compressed, the body would be no smaller")

func (s *smallerThan) Write(p []byte) (int, error) {
	if len(s.buf)+len(p) >= s.limit {
		return 0, errNoSmaller
	}
	if s.buf == nil {
		s.buf = make([]byte, 0, s.limit-1) // never grown: one allocation
	}
	s.buf = append(s.buf, p...)
	return len(p), nil
}

// unpackBody returns a kept body as it was received.
func unpackBody(blob []byte) ([]byte, error) {
	if !bytes.HasPrefix(blob, []byte(snappyStream)) {
		return blob, nil
	}
	r := unpackers.Get().(*s2.Reader)
	defer func() {
		r.Reset(nil)
		unpackers.Put(r)
	}()
	r.Reset(bytes.NewReader(blob))
	body, err := io.ReadAll(io.LimitReader(r, maxUnpackedBody+1))
	if err != nil {
		return nil, fmt.Errorf("compressed body: %w", err)
	}
	if len(body) > maxUnpackedBody {
		return nil, errors.New("compressed body: unpacks to more than a delivery can hold")
	}
	return body, nil
}
