package storage

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
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

// maxChunk is the most data one chunk of the framing format holds.
const maxChunk = 64 << 10

var (
	// castagnoli is CRC-32C's table: the format's checksum.
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	// unpackers read compressed bodies, chunks of maxChunk at most.
	unpackers = sync.Pool{New: func() any { return s2.NewReader(nil, s2.ReaderMaxBlockSize(maxChunk)) }}
)

// packBody returns the form in which body is kept: compressed when that
// halves it at least (GitHub's JSON keeps a third or less), as received
// otherwise. Beside body it allocates the kept form's buffer, half body's
// size — memory the webhook's budget for bodies held at once does not
// count — and one chunk's scratch space, 76 KB at most.
func packBody(body []byte) []byte {
	if len(body) < minPackedBody {
		return body
	}
	limit := len(body) / 2
	out := make([]byte, 0, limit)
	out = append(out, snappyStream...)
	scratch := make([]byte, s2.MaxEncodedLen(min(len(body), maxChunk)))
	for rest := body; len(rest) > 0; {
		chunk := rest[:min(len(rest), maxChunk)]
		rest = rest[len(chunk):]
		kind, data := byte(0x00), s2.EncodeSnappy(scratch, chunk) // compressed data
		if len(data) >= len(chunk) {
			kind, data = 0x01, chunk // uncompressed data
		}
		if len(out)+8+len(data) >= limit {
			return body // compressing does not pay
		}
		n, c := 4+len(data), crc32.Checksum(chunk, castagnoli)
		c = (c>>15 | c<<17) + 0xa282ead8 // the format's masked checksum
		out = append(out, kind, byte(n), byte(n>>8), byte(n>>16), byte(c), byte(c>>8), byte(c>>16), byte(c>>24))
		out = append(out, data...)
	}
	return out
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
