package storage_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/klauspost/compress/s2"

	"github.com/lastmile-app/lastmile/pipeline"
)

// snappyFrames decodes Snappy's framing format by its specification
// (github.com/google/snappy, framing_format.txt) — the stream identifier,
// then chunks of a type byte, a 3-byte length and, for data, a masked
// CRC-32C of what the chunk holds — so that the kept form is checked
// against the format, not against the library that wrote it.
func snappyFrames(blob []byte) ([]byte, error) {
	const streamID = "\xff\x06\x00\x00sNaPpY"
	if !bytes.HasPrefix(blob, []byte(streamID)) {
		return nil, fmt.Errorf("no stream identifier")
	}
	blob = blob[len(streamID):]
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	var out []byte
	for len(blob) > 0 {
		if len(blob) < 4 {
			return nil, fmt.Errorf("a chunk header cut short")
		}
		kind, n := blob[0], int(blob[1])|int(blob[2])<<8|int(blob[3])<<16
		if len(blob) < 4+n || n < 4 {
			return nil, fmt.Errorf("chunk of %d bytes, %d left", n, len(blob)-4)
		}
		chunk := blob[4 : 4+n]
		blob = blob[4+n:]
		var data []byte
		switch kind {
		case 0x00: // compressed data
			var err error
			if data, err = s2.Decode(nil, chunk[4:]); err != nil {
				return nil, err
			}
		case 0x01: // uncompressed data
			data = chunk[4:]
		default:
			return nil, fmt.Errorf("chunk type %#x", kind)
		}
		if len(data) > 65536 {
			return nil, fmt.Errorf("a chunk of %d bytes: the format allows 65536", len(data))
		}
		c := crc32.Checksum(data, castagnoli)
		if masked := (c>>15 | c<<17) + 0xa282ead8; masked != binary.LittleEndian.Uint32(chunk) {
			return nil, fmt.Errorf("chunk checksum %#x, want %#x", binary.LittleEndian.Uint32(chunk), masked)
		}
		out = append(out, data...)
	}
	return out, nil
}

func TestBodiesAreKeptCompressedAndReadBackAsReceived(t *testing.T) {
	ctx := context.Background()
	push, err := os.ReadFile("../githubapp/testdata/push.json") // GitHub's own example
	if err != nil {
		t.Fatal(err)
	}
	noise := make([]byte, 4096) // does not compress: kept as received
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range noise {
		noise[i] = byte(rng.Uint32())
	}
	tests := []struct {
		id         string
		body       []byte
		compressed bool
		maxKept    int // bytes the database may hold
	}{
		{"push", push, true, len(push) / 2},
		{"noise", noise, false, len(noise)},
		{"tiny", []byte(`{"zen":"Keep it logically awesome."}`), false, 40},
		{"large", bytes.Repeat(push, 300), true, 300 * len(push) / 10}, // about 2 MB: many chunks
	}
	db := newInboxDB(t)
	raw := rawConn(t, db)
	for _, tc := range tests {
		d := pendingDelivery(tc.id, "acme/"+tc.id)
		d.Body = tc.body
		acceptDelivery(t, db, d)
		var kept []byte
		if err := raw.QueryRow(`SELECT b.body FROM delivery_bodies b JOIN deliveries d ON d.seq = b.seq
			WHERE d.delivery_id = ?`, tc.id).Scan(&kept); err != nil {
			t.Fatalf("%s: %v", tc.id, err)
		}
		if len(kept) > tc.maxKept {
			t.Errorf("%s: %d bytes kept for %d received, want at most %d", tc.id, len(kept), len(tc.body), tc.maxKept)
		}
		if tc.compressed {
			unpacked, err := snappyFrames(kept)
			if err != nil || !bytes.Equal(unpacked, tc.body) {
				t.Errorf("%s: the kept body is not the body received in Snappy's framing format: %v", tc.id, err)
			}
		} else if !bytes.Equal(kept, tc.body) {
			t.Errorf("%s: kept %q, want the body as received", tc.id, kept)
		}
		got, err := db.GetDelivery(ctx, tc.id)
		if err != nil {
			t.Fatalf("GetDelivery(%s): %v", tc.id, err)
		}
		if !bytes.Equal(got.Body, tc.body) {
			t.Errorf("%s: body read back differs from the body received (%d bytes, want %d)", tc.id, len(got.Body), len(tc.body))
		}
	}
	// The worker is handed the body as received, too.
	work, _, err := db.NextWork(ctx, inboxT0, map[pipeline.InHand]bool{}, len(tests))
	if err != nil {
		t.Fatal(err)
	}
	if len(work) != len(tests) {
		t.Fatalf("NextWork handed out %d deliveries, want %d", len(work), len(tests))
	}
	for _, d := range work {
		for _, tc := range tests {
			if d.ID == tc.id && !bytes.Equal(d.Body, tc.body) {
				t.Errorf("NextWork: %s's body differs from the body received", d.ID)
			}
		}
	}
}

// A body stored before bodies were compressed reads as it was; a damaged
// one is read as no body and the damage, naming the delivery — never a
// wrong body handed to the worker, nor an error that stops the inbox.
func TestKeptBodiesFromBeforeAndDamaged(t *testing.T) {
	ctx := context.Background()
	db := newInboxDB(t)
	raw := rawConn(t, db)
	push, err := os.ReadFile("../githubapp/testdata/push.json")
	if err != nil {
		t.Fatal(err)
	}
	var good []byte
	acceptDelivery(t, db, &pipeline.Delivery{ID: "good", Event: "push", Repository: "acme/good", State: pipeline.DeliveryPending, Body: push})
	if err := raw.QueryRow(`SELECT b.body FROM delivery_bodies b JOIN deliveries d ON d.seq = b.seq WHERE d.delivery_id = 'good'`).Scan(&good); err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(good)
	flipped[len(flipped)-1] ^= 0x20 // the data no longer matches its checksum
	old := `{"ref":"refs/heads/main","before":"6113728f27ae82c7b1a177c8d03f9e96e0adf246"}`
	for id, kept := range map[string][]byte{
		"old":       []byte(old),
		"garbage":   []byte("\xff\x06\x00\x00sNaPpY\x00\x10\x00\x00not snappy at all"),
		"cut-short": good[:len(good)/2],
		"flipped":   flipped,
	} {
		d := pendingDelivery(id, "acme/"+id)
		d.Body = nil
		acceptDelivery(t, db, d)
		if _, err := raw.Exec(`INSERT INTO delivery_bodies (seq, body) SELECT seq, ? FROM deliveries WHERE delivery_id = ?`, kept, id); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := db.GetDelivery(ctx, "old"); err != nil || string(got.Body) != old {
		t.Errorf("a body kept as received: %v, %q", err, got.Body)
	}
	for _, id := range []string{"garbage", "cut-short", "flipped"} {
		got, err := db.GetDelivery(ctx, id)
		if err != nil {
			t.Fatalf("GetDelivery(%s): %v", id, err)
		}
		if got.Body != nil || got.BodyDamage == nil || !strings.Contains(got.BodyDamage.Error(), "delivery "+id+": compressed body") {
			t.Errorf("GetDelivery(%s): body %q, damage %v; want no body, and the damage naming the delivery's compressed body", id, got.Body, got.BodyDamage)
		}
	}
	// The damage spoils that delivery alone: the worker is handed every
	// queue's head, the damaged ones saying so.
	work, _, err := db.NextWork(ctx, inboxT0, map[pipeline.InHand]bool{}, 10)
	if err != nil {
		t.Fatalf("NextWork beside damaged bodies: %v", err)
	}
	damaged := 0
	for _, d := range work {
		if d.BodyDamage != nil {
			damaged++
		}
	}
	if len(work) != 5 || damaged != 3 {
		t.Errorf("NextWork handed out %d deliveries, %d of them damaged; want 5, 3 damaged", len(work), damaged)
	}
}
