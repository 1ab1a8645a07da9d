package app

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://api.github.com/":                   "https://api.github.com/",
		"https://user:pass@ghes.example.com/api/v3": "https://REDACTED@ghes.example.com/api/v3",
		"https://token@ghes.example.com":            "https://REDACTED@ghes.example.com",
		"https://a@b:c@host/x?y=z@w#f@g":            "https://REDACTED@g",
		"https://host/api/v3/?token=zzz":            "https://host/api/v3/?REDACTED",
		"https://host/api/v3/#secret":               "https://host/api/v3/#REDACTED",
		"http://user:pass@[::1":                     "http://REDACTED@[::1",
		"https://host/path@not-userinfo":            "https://REDACTED@not-userinfo", // as a token holding '/' would be
		"user:pass@host/api":                        "REDACTED@host/api",
		// A password holding '/', '?' or '#', or all digits: parsed or not,
		// its URL is redacted up to the last '@'.
		"https://x-access-token:ghp_sec/ret@ghe.example.com/api/v3/": "https://REDACTED@ghe.example.com/api/v3/",
		"https://user:pa?ss@ghe.example.com/":                        "https://REDACTED@ghe.example.com/",
		"https://user:pa#ss@ghe.example.com/":                        "https://REDACTED@ghe.example.com/",
		"":                                                           "",
		// Typos that parse, their authority elsewhere.
		"//user:hunter2@ghe.example.com":                   "REDACTED@ghe.example.com",
		"https:/user:hunter2@ghe.example.com":              "REDACTED@ghe.example.com",
		"https//user:hunter2@ghe.example.com/x":            "REDACTED@ghe.example.com/x",
		"https:user:hunter2@ghe.example.com?a=b":           "REDACTED@ghe.example.com?REDACTED",
		"https:///octo:s3cretpw@ghe.example.com/api/v3/":   "https://REDACTED@ghe.example.com/api/v3/",
		"https:/octo:s3c?retpw@ghe.example.com":            "REDACTED@ghe.example.com",
		"https:user:p?ss@host":                             "REDACTED@host",
		"https:user:p#ss@host/x?y":                         "REDACTED@host/x?REDACTED",
		"https://ghp_ab/cdEF@ghe.example.com/api/v3":       "https://REDACTED@ghe.example.com/api/v3",
		"https://user:8/cd@ghe.example.com/api/v3":         "https://REDACTED@ghe.example.com/api/v3",
		"//user:hunter2@ghe.example.com/?next=https://x":   "REDACTED@ghe.example.com/?REDACTED",
		"https:/user:hunter2@ghe.example.com/x?r=http://y": "REDACTED@ghe.example.com/x?REDACTED",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// Whatever the shape around it, a password before an '@' never reaches
// redactURL's output: passwords of the characters that break URLs, put
// where typos put them, in URLs with a query or a fragment.
func TestRedactURLNeverShowsThePassword(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	parts := []string{"https://", "https:/", "https:", "//", "", "pw://", "http://x.example/", "https:///"}
	chars := "abcXYZ019/?#:@%.-_~!$&'()*+,;=[]"
	for range 20000 {
		pw := "SEKRIT"
		for range rng.IntN(6) {
			pw += string(chars[rng.IntN(len(chars))])
		}
		in := parts[rng.IntN(len(parts))] + []string{"", "user:", "a@b:"}[rng.IntN(3)] + pw + "@ghe.example.com" +
			[]string{"", "/api/v3/", "/x?y=1", "/x#f", "/?next=https://y"}[rng.IntN(5)]
		if out := redactURL(in); strings.Contains(out, "SEKRIT") {
			t.Fatalf("redactURL(%q) = %q shows the password", in, out)
		}
	}
}

// lockedBuffer is a log destination the App's goroutines share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The start-up log line names the GitHub URL without its user
// information, even one set by code that LoadConfig's check does not see.
func TestStartupLogRedactsTheGitHubURL(t *testing.T) {
	cfg := bareConfig(t, "http://user:s3cret-pass@127.0.0.1:1/")
	cfg.ShutdownTimeout = 10 * time.Second
	log, stop := runLogged(t, cfg)
	waitUntil(t, "lastmile logs its start", 10*time.Second, func() bool { return strings.Contains(log.String(), "lastmile starting") })
	// The start-up check of the App's credentials names GitHub too.
	waitUntil(t, "the credentials check gives up", 60*time.Second, func() bool {
		return strings.Contains(log.String(), "could not check the App's credentials")
	})
	stop()
	if out := log.String(); strings.Contains(out, "s3cret-pass") || !strings.Contains(out, "github=http://REDACTED@127.0.0.1:1/") ||
		!strings.Contains(out, "github=http://REDACTED@127.0.0.1:1 ") {
		t.Errorf("log:\n%s\nwant the GitHub URL as http://REDACTED@127.0.0.1:1/", out)
	}
}

// A webhook secret with whitespace at either end is warned of at start-up
// (most often a newline copied with it), without the secret; one without
// is not.
func TestStartupWarnsOfAWebhookSecretWithWhitespace(t *testing.T) {
	for secret, warned := range map[string]bool{"s3cret-value\n": true, " s3cret-value": true, "s3cret-value": false, "s3cret value": false} {
		var log lockedBuffer
		warnSecretWhitespace(slog.New(slog.NewTextHandler(&log, nil)), Secret(secret))
		out := log.String()
		if strings.Contains(out, "whitespace") != warned || strings.Contains(out, "s3cret") {
			t.Errorf("secret %q: log %q; want a warning: %v, without the secret", secret, out, warned)
		}
	}
	cfg := bareConfig(t, "http://127.0.0.1:1/")
	cfg.WebhookSecret = "s3cret-value\n"
	log, stop := runLogged(t, cfg)
	waitUntil(t, "lastmile warns of the webhook secret", 10*time.Second, func() bool {
		return strings.Contains(log.String(), "starts or ends with whitespace")
	})
	stop()
}

// runLogged runs lastmile with cfg, logging as text to the buffer it
// returns; stop ends the run and checks that it ended without an error.
func runLogged(t *testing.T, cfg *Config) (log *lockedBuffer, stop func()) {
	t.Helper()
	log = &lockedBuffer{}
	a, err := New(context.Background(), cfg, Options{Logger: slog.New(slog.NewTextHandler(log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	return log, func() {
		t.Helper()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

// A secret given as a flag can be read in the process list by other users
// of the machine: LoadConfig lists the flags (not from the environment),
// and the start warns of them, never showing a value.
func TestSecretsGivenAsFlagsAreWarnedOf(t *testing.T) {
	key := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(newKey(t))})
	env := map[string]string{"LASTMILE_APP_ID": "1", "LASTMILE_PRIVATE_KEY": string(key)}
	loaded, err := LoadConfig([]string{"--webhook-secret", "flag-s3cret-value", "--api-token=flag-t0ken-value-long-enough"},
		func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"--webhook-secret", "--api-token"}; !slices.Equal(loaded.SecretFlags, want) {
		t.Errorf("secret flags %q, want %q", loaded.SecretFlags, want)
	}
	cfg := bareConfig(t, "http://127.0.0.1:1/")
	cfg.WebhookSecret, cfg.APIToken, cfg.SecretFlags = loaded.WebhookSecret, loaded.APIToken, loaded.SecretFlags
	log, stop := runLogged(t, cfg)
	defer stop()
	waitUntil(t, "the warning of the secrets given as flags", 10*time.Second, func() bool {
		return strings.Contains(log.String(), "secrets given as flags can be read by other users of this machine")
	})
	if l := log.String(); !strings.Contains(l, `flags="[--webhook-secret --api-token]"`) || strings.Contains(l, "flag-s3cret") || strings.Contains(l, "flag-t0ken") {
		t.Errorf("log:\n%s\nwant the flags named, not their values", l)
	}
}
