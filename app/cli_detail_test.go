package app

import (
	"strings"
	"testing"
)

func TestDeliveryDetail(t *testing.T) {
	long := func(prefix, suffix string, n int) string { return prefix + strings.Repeat("x", n) + suffix }
	tests := map[string]struct {
		note, lastErr string
		want          string
		cut           bool
	}{
		"nothing":             {want: ""},
		"a note":              {note: "repository not enrolled", want: "repository not enrolled"},
		"an error":            {lastErr: "GitHub answered 502", want: "GitHub answered 502"},
		"both, short":         {note: "discarded", lastErr: "boom", want: "discarded; last error: boom"},
		"spaces and newlines": {lastErr: "line one\n\tline  two", want: "line one line two"},
		"a long error keeps its start and its cause": {
			lastErr: long("read config: ", ": 502 Server Error", 200),
			want:    "read config: " + strings.Repeat("x", 20) + "…" + strings.Repeat("x", 48) + ": 502 Server Error", cut: true,
		},
		"a long note": {
			note: long("not enrolled: ", " at abc", 200),
			want: "not enrolled: " + strings.Repeat("x", 19) + "…" + strings.Repeat("x", 59) + " at abc", cut: true,
		},
		"a short note and a long error": {
			note: "discarded by an operator: replayed", lastErr: long("GET http://", ": 502", 200),
			want: "discarded by an operator: replayed; last error: GET http://" + strings.Repeat("x", 6) + "…" + strings.Repeat("x", 29) + ": 502", cut: true,
		},
		"both long: the note gets half": {
			note: long("note ", " end", 200), lastErr: long("error ", " cause", 200),
			want: "note " + strings.Repeat("x", 11) + "…" + strings.Repeat("x", 29) + " end; last error: error " + strings.Repeat("x", 6) + "…" + strings.Repeat("x", 17) + " cause",
			cut:  true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, cut := deliveryDetail(tc.note, tc.lastErr, 100)
			if got != tc.want || cut != tc.cut {
				t.Errorf("got %q (cut %v), want %q (cut %v)", got, cut, tc.want, tc.cut)
			}
			if n := len([]rune(got)); n > 100 {
				t.Errorf("%d characters, more than 100", n)
			}
		})
	}
}
