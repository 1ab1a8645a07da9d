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
// indexes' pages are the rest). A body that compression
// would not make smaller, and every body stored before lastmile compressed
// them, is kept as received: GitHub's bodies are JSON, which never begins
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

// packBody returns the form in which body is kept: compressed when that is
// smaller, as received otherwise.
func packBody(body []byte) []byte {
	if len(body) < minPackedBody {
		return body
	}
	var buf bytes.Buffer
	buf.Grow(len(body) / 2)
	w := packers.Get().(*s2.Writer)
	defer packers.Put(w)
	w.Reset(&buf)
	if _, err := w.Write(body); err != nil {
		return body
	}
	if err := w.Close(); err != nil || buf.Len() >= len(body) {
		return body
	}
	return buf.Bytes()
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
