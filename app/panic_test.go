package app

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// recovered runs f and returns the error safeHandle records of its panic.
func recovered(f func()) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = panicError(p, panicked())
		}
	}()
	f()
	return nil
}

// panicked names the line that panicked, the runtime's own frames skipped,
// whatever raised the panic.
func TestPanickedNamesThePanickingLine(t *testing.T) {
	var line int
	tests := map[string]struct {
		f    func()
		want string // the panic's value
	}{
		"panic": {func() {
			_, _, line, _ = runtime.Caller(0)
			panic("boom")
		}, "boom"},
		"an error": {func() {
			_, _, line, _ = runtime.Caller(0)
			panic(errors.New("boom"))
		}, "boom"},
		"nil map": {func() {
			var m map[string]int
			_, _, line, _ = runtime.Caller(0)
			m["a"]++
		}, "assignment to entry in nil map"},
		"nil pointer": {func() {
			var p *struct{ n int }
			_, _, line, _ = runtime.Caller(0)
			p.n++
		}, "runtime error: invalid memory address or nil pointer dereference"},
		"index out of range": {func() {
			s := []int{1, 2, 3}
			i := len(s) + 2
			_, _, line, _ = runtime.Caller(0)
			s[i]++
		}, "runtime error: index out of range [5] with length 3"},
		"nil": {func() {
			_, _, line, _ = runtime.Caller(0)
			panic(nil)
		}, "panic called with nil argument"},
		// Raised in a library on lastmile's behalf: lastmile's line that
		// called it, not the library's.
		"in a library": {func() {
			_, _, line, _ = runtime.Caller(0)
			strings.Repeat("x", -1)
		}, "strings: negative Repeat count"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := recovered(tc.f)
			where := fmt.Sprintf("app/panic_test.go:%d", line+1)
			if want := "handler panic: " + tc.want + " (at " + where + ")"; err == nil || err.Error() != want {
				t.Errorf("got %v, want %s", err, want)
			}
		})
	}
}

// A long panic value is cut: the delivery's error stays short.
func TestPanicErrorIsBounded(t *testing.T) {
	err := panicError(strings.Repeat("x", 5000), "app/worker.go:1")
	if n := len([]rune(err.Error())); n > 250 || !strings.HasSuffix(err.Error(), "x… (at app/worker.go:1)") {
		t.Errorf("%d characters: %s", n, err)
	}
	if err := panicError("boom", ""); err.Error() != "handler panic: boom" {
		t.Errorf("without where: %s", err)
	}
}
