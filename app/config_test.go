package app_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/app"
)

// testKeys are generated once: an RSA key as GitHub issues it (PKCS#1),
// the same key in PKCS#8, and keys that are not RSA.
type testKeys struct {
	rsa              *rsa.PrivateKey
	pkcs1, pkcs8     string
	ecPKCS8, ecSEC1  string
	certificate      string
	corruptRSA       string
	encryptedPKCS8   string   // passphrase-protected, as openssl pkey -aes256 writes it
	encryptedPKCS1   string   // passphrase-protected, OpenSSL's traditional form
	pkcs1Base64Lines []string // the key material as it appears in the PEM
}

var keysOnce = sync.OnceValues(func() (*testKeys, error) {
	k := &testKeys{}
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, err
	}
	k.pkcs1 = string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.rsa)}))
	der, err := x509.MarshalPKCS8PrivateKey(k.rsa)
	if err != nil {
		return nil, err
	}
	k.pkcs8 = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	if der, err = x509.MarshalPKCS8PrivateKey(ec); err != nil {
		return nil, err
	}
	k.ecPKCS8 = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if der, err = x509.MarshalECPrivateKey(ec); err != nil {
		return nil, err
	}
	k.ecSEC1 = string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	k.certificate = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not really")}))
	k.corruptRSA = string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.rsa)[:200]}))
	// Only the type and headers matter: they are what lastmile reads of
	// an encrypted key (its bytes, ciphertext, do not parse).
	k.encryptedPKCS8 = string(pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("ciphertext, not a key")}))
	k.encryptedPKCS1 = string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY",
		Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,08EAA8BFDA23DA4BF721F09A74C212BB"},
		Bytes:   x509.MarshalPKCS1PrivateKey(k.rsa)[:1184]})) // ciphertext's length, a multiple of the block size
	for _, line := range strings.Split(k.pkcs1, "\n") {
		if len(line) == 64 {
			k.pkcs1Base64Lines = append(k.pkcs1Base64Lines, line)
		}
	}
	return k, nil
})

func keys(t *testing.T) *testKeys {
	t.Helper()
	k, err := keysOnce()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

const (
	webhookSecret = "whsec-TOPSECRET-webhook-0001"
	apiToken      = "apitoken-TOPSECRET-0002-long-enough"
)

// validEnv is a complete, valid environment.
func validEnv(t *testing.T) map[string]string {
	return map[string]string{
		"LASTMILE_WEBHOOK_SECRET": webhookSecret,
		"LASTMILE_APP_ID":         "12345",
		"LASTMILE_PRIVATE_KEY":    keys(t).pkcs1,
	}
}

func getenvFrom(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

func load(t *testing.T, env map[string]string, args ...string) (*app.Config, string, error) {
	t.Helper()
	var usage bytes.Buffer
	cfg, err := app.LoadConfig(args, getenvFrom(env), &usage)
	return cfg, usage.String(), err
}

func TestLoadConfigDefaults(t *testing.T) {
	cfg, _, err := load(t, validEnv(t))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	// The defaults the product specification promises.
	if cfg.Listen != ":8080" || cfg.Database != "lastmile.db" || cfg.GitHubURL != "https://api.github.com/" {
		t.Errorf("listen %q, database %q, GitHub URL %q; want the documented defaults", cfg.Listen, cfg.Database, cfg.GitHubURL)
	}
	if cfg.AppID != 12345 || cfg.WebhookSecret.Reveal() != webhookSecret || cfg.APIToken.Reveal() != "" {
		t.Errorf("app ID %d, secret %q, API token %q", cfg.AppID, cfg.WebhookSecret.Reveal(), cfg.APIToken.Reveal())
	}
	if cfg.Key == nil || !cfg.Key.Equal(keys(t).rsa) {
		t.Error("the private key was not parsed")
	}
	if cfg.Workers < 1 || cfg.MaxAttempts < 1 || cfg.ShutdownTimeout <= 0 || cfg.RedeliveryWindow <= 0 ||
		cfg.ContextsTimeout <= 0 || cfg.DeployLogMaxBytes <= 0 || cfg.LogLevel != slog.LevelInfo {
		t.Errorf("unusable defaults: %+v", cfg)
	}
}

func TestLoadConfigReadsEveryVariable(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "app.pem")
	if err := os.WriteFile(keyFile, []byte(keys(t).pkcs8), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"LASTMILE_LISTEN":               "127.0.0.1:9090",
		"LASTMILE_ADMIN_LISTEN":         "127.0.0.1:9091",
		"LASTMILE_DATABASE":             filepath.Join(dir, "db.sqlite"),
		"LASTMILE_WEBHOOK_SECRET":       webhookSecret,
		"LASTMILE_APP_ID":               "987654",
		"LASTMILE_PRIVATE_KEY_FILE":     keyFile,
		"LASTMILE_GITHUB_URL":           "https://ghes.example.com/api/v3/",
		"LASTMILE_API_TOKEN":            apiToken,
		"LASTMILE_LOG_LEVEL":            "debug",
		"LASTMILE_WORKERS":              "16",
		"LASTMILE_MAX_ATTEMPTS":         "3",
		"LASTMILE_REDELIVERY_INTERVAL":  "0",
		"LASTMILE_REDELIVERY_WINDOW":    "168h",
		"LASTMILE_RETENTION_DAYS":       "90",
		"LASTMILE_DEPLOY_LOG_MAX_BYTES": "4096",
		"LASTMILE_CONTEXTS_TIMEOUT":     "2h30m",
		"LASTMILE_SHUTDOWN_TIMEOUT":     "5s",
	}
	cfg, _, err := load(t, env)
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	want := app.Config{
		Listen: "127.0.0.1:9090", AdminListen: "127.0.0.1:9091", Database: filepath.Join(dir, "db.sqlite"), WebhookSecret: webhookSecret, AppID: 987654,
		PrivateKeyFile: keyFile, GitHubURL: "https://ghes.example.com/api/v3/", APIToken: apiToken, LogLevel: slog.LevelDebug,
		Workers: 16, MaxAttempts: 3, RedeliveryInterval: 0, RedeliveryWindow: 168 * time.Hour, RetentionDays: 90,
		DeployLogMaxBytes: 4096, ContextsTimeout: 150 * time.Minute, ShutdownTimeout: 5 * time.Second,
	}
	got := *cfg
	if !got.Key.Equal(keys(t).rsa) {
		t.Error("the PKCS#8 key file was not parsed into the RSA key")
	}
	got.Key = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("config\n got %+v\nwant %+v", got, want)
	}
}

// Addresses that do not take one socket twice, and the level names in any
// case, are accepted.
func TestLoadConfigAcceptsDistinctAddressesAndLevelNames(t *testing.T) {
	for _, tc := range []struct{ listen, admin, level string }{
		{":8080", "127.0.0.1:9797", "WARN"},
		{"127.0.0.1:9090", "10.0.0.5:9090", "Error"}, // one port on two interfaces
		{"127.0.0.1:0", "127.0.0.1:0", "debug"},      // two ports the system picks
		{"[::1]:9090", "[::1]:9091", "info"},
		{"127.0.0.1:9090", "[::1]:9090", "info"},     // the loopback of each family
		{"127.0.0.1:9090", "127.0.0.2:9090", "info"}, // two loopback addresses
		{"localhost:9090", "[::1]:9090", "info"},
	} {
		env := validEnv(t)
		env["LASTMILE_LISTEN"], env["LASTMILE_ADMIN_LISTEN"], env["LASTMILE_LOG_LEVEL"] = tc.listen, tc.admin, tc.level
		cfg, _, err := load(t, env)
		if err != nil {
			t.Errorf("%+v: %v", tc, err)
			continue
		}
		if cfg.Listen != tc.listen || cfg.AdminListen != tc.admin || !strings.EqualFold(cfg.LogLevel.String(), tc.level) {
			t.Errorf("%+v: read %q, %q, %v", tc, cfg.Listen, cfg.AdminListen, cfg.LogLevel)
		}
	}
}

func TestLoadConfigFlagsOverrideEnvironment(t *testing.T) {
	env := validEnv(t)
	env["LASTMILE_LISTEN"] = ":9000"
	env["LASTMILE_APP_ID"] = "not-a-number" // overridden: not a problem
	env["LASTMILE_WORKERS"] = "many"        // overridden: not a problem
	env["LASTMILE_GITHUB_URL"] = "https://env.example.com/"
	cfg, _, err := load(t, env,
		"--listen", "127.0.0.1:9100", "-app-id=777", "--workers=8", "--webhook-secret", "flag-secret-value",
		"--database", "flag.db")
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if cfg.Listen != "127.0.0.1:9100" || cfg.AppID != 777 || cfg.Workers != 8 || cfg.WebhookSecret.Reveal() != "flag-secret-value" || cfg.Database != "flag.db" {
		t.Errorf("flags did not win: %+v", cfg)
	}
	if cfg.GitHubURL != "https://env.example.com/" {
		t.Errorf("GitHub URL %q: the environment applies where no flag is given", cfg.GitHubURL)
	}

	// A bad flag value is reported under the flag's name.
	_, _, err = load(t, validEnv(t), "--workers", "zero")
	if err == nil || !strings.Contains(err.Error(), "--workers") {
		t.Errorf("bad --workers: %v, want a problem naming --workers", err)
	}
}

// problems returns the problems of a *app.ConfigError, failing otherwise.
func problems(t *testing.T, err error) []string {
	t.Helper()
	var ce *app.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T), want *app.ConfigError", err, err)
	}
	var out []string
	for _, p := range ce.Problems {
		out = append(out, p.Error())
	}
	return out
}

func TestLoadConfigReportsEachProblem(t *testing.T) {
	k := keys(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	notPEM := write("not.pem", "this is not a key\n")
	ecFile := write("ec.pem", k.ecPKCS8)

	tests := map[string]struct {
		set   map[string]string // applied to a valid environment; "" unsets
		want  []string          // substrings of the one problem
		flags []string
	}{
		"no webhook secret": {set: map[string]string{"LASTMILE_WEBHOOK_SECRET": ""}, want: []string{"LASTMILE_WEBHOOK_SECRET", "required"}},
		// A flag given empty (--database="$DB", DB unset) would put the
		// database, or the admin endpoints, elsewhere than the
		// environment says: refused, not taken for the default.
		"an empty database flag": {set: map[string]string{"LASTMILE_DATABASE": "/srv/lastmile/prod.db"}, flags: []string{"--database="},
			want: []string{"--database is empty", "LASTMILE_DATABASE"}},
		"an empty admin address flag": {set: map[string]string{"LASTMILE_ADMIN_LISTEN": "127.0.0.1:9797"}, flags: []string{"--admin-listen", ""},
			want: []string{"--admin-listen is empty"}},
		"an empty secret flag": {flags: []string{"--webhook-secret="}, want: []string{"--webhook-secret is empty"}},
		"an empty API token flag": {set: map[string]string{"LASTMILE_API_TOKEN": "0123456789abcdef-token"}, flags: []string{"--api-token="},
			want: []string{"--api-token is empty", "LASTMILE_API_TOKEN then applies, or, unset, what lastmile serve --help says of it"}},
		"a redelivery interval as long as the window, by flag": {flags: []string{"--redelivery-interval", "100h"},
			want: []string{"--redelivery-interval 100h0m0s is not shorter than LASTMILE_REDELIVERY_WINDOW 72h0m0s"}},
		"a redelivery interval as long as the window": {set: map[string]string{"LASTMILE_REDELIVERY_INTERVAL": "96h"},
			want: []string{"LASTMILE_REDELIVERY_INTERVAL 96h0m0s is not shorter than LASTMILE_REDELIVERY_WINDOW 72h0m0s"}},
		"no App ID": {set: map[string]string{"LASTMILE_APP_ID": ""}, want: []string{"LASTMILE_APP_ID", "required"}},
		"App ID not a number": {set: map[string]string{"LASTMILE_APP_ID": "twelve"},
			want: []string{"LASTMILE_APP_ID", `"twelve"`, "positive integer"}},
		"App ID zero":     {set: map[string]string{"LASTMILE_APP_ID": "0"}, want: []string{"LASTMILE_APP_ID", "positive integer"}},
		"App ID negative": {set: map[string]string{"LASTMILE_APP_ID": "-4"}, want: []string{"LASTMILE_APP_ID", "positive integer"}},
		"no private key":  {set: map[string]string{"LASTMILE_PRIVATE_KEY": ""}, want: []string{"LASTMILE_PRIVATE_KEY_FILE or LASTMILE_PRIVATE_KEY is required"}},
		"both key settings": {set: map[string]string{"LASTMILE_PRIVATE_KEY_FILE": write("ok.pem", k.pkcs1)},
			want: []string{"only one of LASTMILE_PRIVATE_KEY_FILE (--private-key-file) and LASTMILE_PRIVATE_KEY (--private-key)"}},
		"unreadable key file": {set: map[string]string{"LASTMILE_PRIVATE_KEY": "", "LASTMILE_PRIVATE_KEY_FILE": filepath.Join(dir, "missing.pem")},
			want: []string{"LASTMILE_PRIVATE_KEY_FILE", "cannot read", "missing.pem"}},
		"key file is a directory": {set: map[string]string{"LASTMILE_PRIVATE_KEY": "", "LASTMILE_PRIVATE_KEY_FILE": dir},
			want: []string{"LASTMILE_PRIVATE_KEY_FILE", "cannot read"}},
		"key file not PEM": {set: map[string]string{"LASTMILE_PRIVATE_KEY": "", "LASTMILE_PRIVATE_KEY_FILE": notPEM},
			want: []string{"LASTMILE_PRIVATE_KEY_FILE", "not a PEM private key"}},
		"key file holds an ECDSA key": {set: map[string]string{"LASTMILE_PRIVATE_KEY": "", "LASTMILE_PRIVATE_KEY_FILE": ecFile},
			want: []string{"LASTMILE_PRIVATE_KEY_FILE", "not RSA"}},
		"inline key not PEM": {set: map[string]string{"LASTMILE_PRIVATE_KEY": "MIIEowIBAAKCAQEA"}, want: []string{"LASTMILE_PRIVATE_KEY", "not a PEM private key"}},
		"ECDSA PKCS#8 key":   {set: map[string]string{"LASTMILE_PRIVATE_KEY": k.ecPKCS8}, want: []string{"LASTMILE_PRIVATE_KEY", "not RSA"}},
		"EC SEC1 key":        {set: map[string]string{"LASTMILE_PRIVATE_KEY": k.ecSEC1}, want: []string{"LASTMILE_PRIVATE_KEY", "EC PRIVATE KEY", "not an RSA private key"}},
		"a certificate":      {set: map[string]string{"LASTMILE_PRIVATE_KEY": k.certificate}, want: []string{"CERTIFICATE", "not an RSA private key"}},
		"corrupt RSA key":    {set: map[string]string{"LASTMILE_PRIVATE_KEY": k.corruptRSA}, want: []string{"LASTMILE_PRIVATE_KEY", "malformed RSA private key"}},
		"key file setting holds the key": {set: map[string]string{"LASTMILE_PRIVATE_KEY": "", "LASTMILE_PRIVATE_KEY_FILE": k.pkcs1},
			want: []string{"LASTMILE_PRIVATE_KEY_FILE", "holds a PEM key, not a file name", "put the key in LASTMILE_PRIVATE_KEY"}},
		"key file setting holds the key on one line": {set: map[string]string{"LASTMILE_PRIVATE_KEY": "", "LASTMILE_PRIVATE_KEY_FILE": strings.Join(k.pkcs1Base64Lines, "")},
			want: []string{"LASTMILE_PRIVATE_KEY_FILE", "cannot read the file it names", "not shown", "Put the key in LASTMILE_PRIVATE_KEY"}},
		"key file flag holds the key": {set: map[string]string{"LASTMILE_PRIVATE_KEY": ""}, flags: []string{"--private-key-file", k.pkcs8},
			want: []string{"--private-key-file", "holds a PEM key, not a file name"}},
		"passphrase-protected PKCS#8 key": {set: map[string]string{"LASTMILE_PRIVATE_KEY": k.encryptedPKCS8},
			want: []string{"LASTMILE_PRIVATE_KEY", "passphrase-protected", "unencrypted PEM GitHub generated", "openssl pkey -in KEY -out KEY.plain"}},
		"passphrase-protected traditional RSA key": {set: map[string]string{"LASTMILE_PRIVATE_KEY": k.encryptedPKCS1},
			want: []string{"LASTMILE_PRIVATE_KEY", "passphrase-protected", "unencrypted PEM GitHub generated"}},
		"key file passphrase-protected": {set: map[string]string{"LASTMILE_PRIVATE_KEY": "", "LASTMILE_PRIVATE_KEY_FILE": write("encrypted.pem", k.encryptedPKCS1)},
			want: []string{"LASTMILE_PRIVATE_KEY_FILE", "encrypted.pem", "passphrase-protected"}},
		"URL with another scheme": {set: map[string]string{"LASTMILE_GITHUB_URL": "ftp://github.example.com/"},
			want: []string{"LASTMILE_GITHUB_URL", "not an http(s) URL"}},
		"URL without a host": {set: map[string]string{"LASTMILE_GITHUB_URL": "https:///api/v3/"}, want: []string{"LASTMILE_GITHUB_URL"}},
		"not a URL":          {set: map[string]string{"LASTMILE_GITHUB_URL": "api.github.com"}, want: []string{"LASTMILE_GITHUB_URL"}},
		"unparsable URL":     {set: map[string]string{"LASTMILE_GITHUB_URL": "http://[::1"}, want: []string{"LASTMILE_GITHUB_URL"}},
		"URL with a user and password": {set: map[string]string{"LASTMILE_GITHUB_URL": "https://user:s3cret-pass@ghes.example.com/api/v3/"},
			want: []string{"LASTMILE_GITHUB_URL", `"https://REDACTED@ghes.example.com/api/v3/" must be the API root alone, without a user name or password`}},
		"URL with a token as its user": {set: map[string]string{"LASTMILE_GITHUB_URL": "https://ghp_s3cret@api.github.com/"},
			want: []string{"LASTMILE_GITHUB_URL", "REDACTED@api.github.com", "user name or password"}},
		"URL with a query": {set: map[string]string{"LASTMILE_GITHUB_URL": "https://ghes.example.com/api/v3/?per_page=100"},
			want: []string{"LASTMILE_GITHUB_URL", "without a query (?…)"}},
		"URL with an empty query": {set: map[string]string{"LASTMILE_GITHUB_URL": "https://api.github.com/?"},
			want: []string{"LASTMILE_GITHUB_URL", "without a query"}},
		"URL with a fragment": {set: map[string]string{"LASTMILE_GITHUB_URL": "https://api.github.com/#v3"},
			want: []string{"LASTMILE_GITHUB_URL", "without a fragment (#…)"}},
		"URL with all three": {set: map[string]string{"LASTMILE_GITHUB_URL": "https://u:p@api.github.com/?a=b#c"},
			want: []string{"LASTMILE_GITHUB_URL", "without a user name or password", "nor a query", "nor a fragment"}},
		"listen without a port": {set: map[string]string{"LASTMILE_LISTEN": "localhost"},
			want: []string{"LASTMILE_LISTEN", "host:port"}},
		"admin address without a port": {set: map[string]string{"LASTMILE_ADMIN_LISTEN": "127.0.0.1"},
			want: []string{"LASTMILE_ADMIN_LISTEN", "host:port"}},
		"admin address is the webhook's": {set: map[string]string{"LASTMILE_LISTEN": "127.0.0.1:9090", "LASTMILE_ADMIN_LISTEN": "127.0.0.1:9090"},
			want: []string{"LASTMILE_ADMIN_LISTEN 127.0.0.1:9090 and LASTMILE_LISTEN 127.0.0.1:9090 would take the same port"}},
		"admin address on every interface, the webhook's port": {set: map[string]string{"LASTMILE_LISTEN": ":9090", "LASTMILE_ADMIN_LISTEN": "0.0.0.0:9090"},
			want: []string{"would take the same port"}},
		"admin address on the loopback, the webhook's on every interface": {set: map[string]string{"LASTMILE_LISTEN": "[::]:9090", "LASTMILE_ADMIN_LISTEN": "127.0.0.1:9090"},
			want: []string{"would take the same port"}},
		"admin address localhost, the webhook's 127.0.0.1": {set: map[string]string{"LASTMILE_LISTEN": "127.0.0.1:9090", "LASTMILE_ADMIN_LISTEN": "localhost:9090"},
			want: []string{"would take the same port"}},
		"admin address the webhook's, spelled otherwise": {set: map[string]string{"LASTMILE_LISTEN": "[::1]:9090", "LASTMILE_ADMIN_LISTEN": "[0:0:0:0:0:0:0:1]:9090"},
			want: []string{"would take the same port"}},
		"admin address on every interface, spelled otherwise": {set: map[string]string{"LASTMILE_LISTEN": "[0:0:0:0:0:0:0:0]:9090", "LASTMILE_ADMIN_LISTEN": "127.0.0.1:9090"},
			want: []string{"would take the same port"}},
		"admin address with a zone": {set: map[string]string{"LASTMILE_LISTEN": "[::1]:9090", "LASTMILE_ADMIN_LISTEN": "[::1%lo]:9090"},
			want: []string{"would take the same port"}},
		"port with a sign":          {set: map[string]string{"LASTMILE_LISTEN": ":+8080"}, want: []string{"LASTMILE_LISTEN", `"+8080" is not a port`}},
		"negative zero port":        {set: map[string]string{"LASTMILE_ADMIN_LISTEN": "127.0.0.1:-0"}, want: []string{"LASTMILE_ADMIN_LISTEN", `"-0" is not a port`}},
		"port past 65535":           {set: map[string]string{"LASTMILE_LISTEN": ":65536"}, want: []string{"LASTMILE_LISTEN", "not a port"}},
		"log level with offset":     {set: map[string]string{"LASTMILE_LOG_LEVEL": "error+100"}, want: []string{"LASTMILE_LOG_LEVEL", `"error+100": use debug, info, warn or error`}},
		"log level below debug":     {set: map[string]string{"LASTMILE_LOG_LEVEL": "DEBUG-3"}, want: []string{"LASTMILE_LOG_LEVEL"}},
		"empty database name":       {set: map[string]string{"LASTMILE_DATABASE": "   "}, want: []string{"LASTMILE_DATABASE", "empty"}},
		"duration without a unit":   {set: map[string]string{"LASTMILE_REDELIVERY_INTERVAL": "10"}, want: []string{"LASTMILE_REDELIVERY_INTERVAL", "duration"}},
		"duration in words":         {set: map[string]string{"LASTMILE_SHUTDOWN_TIMEOUT": "soon"}, want: []string{"LASTMILE_SHUTDOWN_TIMEOUT", `"soon"`}},
		"negative duration":         {set: map[string]string{"LASTMILE_REDELIVERY_WINDOW": "-72h"}, want: []string{"LASTMILE_REDELIVERY_WINDOW"}},
		"contexts timeout garbage":  {set: map[string]string{"LASTMILE_CONTEXTS_TIMEOUT": "1d"}, want: []string{"LASTMILE_CONTEXTS_TIMEOUT"}},
		"no workers":                {set: map[string]string{"LASTMILE_WORKERS": "0"}, want: []string{"LASTMILE_WORKERS", "from 1 to 256"}},
		"too many workers":          {set: map[string]string{"LASTMILE_WORKERS": "257"}, want: []string{"LASTMILE_WORKERS"}},
		"workers not a number":      {set: map[string]string{"LASTMILE_WORKERS": "four"}, want: []string{"LASTMILE_WORKERS", `"four"`}},
		"max attempts not a number": {set: map[string]string{"LASTMILE_MAX_ATTEMPTS": "1.5"}, want: []string{"LASTMILE_MAX_ATTEMPTS"}},
		"negative retention":        {set: map[string]string{"LASTMILE_RETENTION_DAYS": "-1"}, want: []string{"LASTMILE_RETENTION_DAYS"}},
		"deploy log limit too small": {set: map[string]string{"LASTMILE_DEPLOY_LOG_MAX_BYTES": "100"},
			want: []string{"LASTMILE_DEPLOY_LOG_MAX_BYTES"}},
		"unknown log level": {set: map[string]string{"LASTMILE_LOG_LEVEL": "verbose"}, want: []string{"LASTMILE_LOG_LEVEL"}},
		"API token too short": {set: map[string]string{"LASTMILE_API_TOKEN": "short-token"},
			want: []string{"LASTMILE_API_TOKEN", "at least 16 characters"}},
		"API token with a trailing newline": {set: map[string]string{"LASTMILE_API_TOKEN": "0123456789abcdef0123\n"},
			want: []string{"LASTMILE_API_TOKEN", "must not start or end with whitespace"}},
		"API token with a leading space": {set: map[string]string{"LASTMILE_API_TOKEN": " 0123456789abcdef0123"},
			want: []string{"LASTMILE_API_TOKEN", "must not start or end with whitespace"}},
		"API token of spaces": {set: map[string]string{"LASTMILE_API_TOKEN": "                    "},
			want: []string{"LASTMILE_API_TOKEN", "must not start or end with whitespace"}},
		"API token flag with a trailing tab": {flags: []string{"--api-token", "0123456789abcdef0123\t"},
			want: []string{"--api-token", "must not start or end with whitespace"}},
		"listen port out of range": {set: map[string]string{"LASTMILE_LISTEN": "127.0.0.1:99999"},
			want: []string{"LASTMILE_LISTEN", `"99999" is not a port`}},
		"database folder missing": {set: map[string]string{"LASTMILE_DATABASE": filepath.Join(dir, "no-such-folder", "lastmile.db")},
			want: []string{"LASTMILE_DATABASE", "does not exist"}},
		"database is a folder": {set: map[string]string{"LASTMILE_DATABASE": dir},
			want: []string{"LASTMILE_DATABASE", "is a folder"}},
		"redelivery every nanosecond": {set: map[string]string{"LASTMILE_REDELIVERY_INTERVAL": "1ns"},
			want: []string{"LASTMILE_REDELIVERY_INTERVAL", "at least 1s, or 0 to turn it off"}},
		"contexts timeout of zero": {set: map[string]string{"LASTMILE_CONTEXTS_TIMEOUT": "0"},
			want: []string{"LASTMILE_CONTEXTS_TIMEOUT", "at least 1m0s"}},
		"bad flag value": {flags: []string{"--redelivery-window", "a week"}, want: []string{"--redelivery-window"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			env := validEnv(t)
			for k, v := range tc.set {
				env[k] = v
			}
			cfg, _, err := load(t, env, tc.flags...)
			if err == nil {
				t.Fatalf("LoadConfig accepted it: %+v", cfg)
			}
			if cfg != nil {
				t.Errorf("a config was returned with the error")
			}
			ps := problems(t, err)
			if len(ps) != 1 {
				t.Fatalf("%d problems, want 1: %q", len(ps), ps)
			}
			for _, w := range tc.want {
				if !strings.Contains(ps[0], w) || !strings.Contains(err.Error(), w) {
					t.Errorf("problem %q should mention %q", ps[0], w)
				}
			}
		})
	}
}

// A credential in LASTMILE_GITHUB_URL (user:password@, or a token as the
// user) is refused, and the refusal does not repeat it, whatever else is
// wrong with the URL.
func TestLoadConfigNeverShowsURLCredentials(t *testing.T) {
	for _, v := range []string{
		"https://user:s3cret@ghes.example.com/api/v3/",
		"https://s3cret@ghes.example.com/",
		"ftp://user:s3cret@ghes.example.com/",
		"http://user:s3cret@[::1/",
		"https://user:s3cret@/api/v3/",
		"https://user:s3cret@ghes.example.com/api/v3/?x=1",
	} {
		for _, via := range []string{"env", "flag"} {
			env := validEnv(t)
			var args []string
			if via == "env" {
				env["LASTMILE_GITHUB_URL"] = v
			} else {
				args = []string{"--github-url", v}
			}
			cfg, _, err := load(t, env, args...)
			if err == nil {
				t.Errorf("%s %q accepted: %+v", via, v, cfg)
				continue
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("%s %q: the error shows the credential: %v", via, v, err)
			}
			if ps := problems(t, err); len(ps) != 1 || !strings.Contains(ps[0], "REDACTED") {
				t.Errorf("%s %q: problems %q, want one naming the URL redacted", via, v, ps)
			}
		}
	}
}

func TestLoadConfigListsEveryProblemAtOnce(t *testing.T) {
	env := map[string]string{
		// no webhook secret, no key
		"LASTMILE_APP_ID":              "twelve",
		"LASTMILE_GITHUB_URL":          "ftp://x",
		"LASTMILE_LISTEN":              "8080",
		"LASTMILE_WORKERS":             "0",
		"LASTMILE_MAX_ATTEMPTS":        "lots",
		"LASTMILE_REDELIVERY_INTERVAL": "often",
		"LASTMILE_REDELIVERY_WINDOW":   "-1h",
		"LASTMILE_LOG_LEVEL":           "loud",
	}
	_, _, err := load(t, env)
	ps := problems(t, err)
	wantVars := []string{"LASTMILE_WEBHOOK_SECRET", "LASTMILE_PRIVATE_KEY", "LASTMILE_APP_ID", "LASTMILE_GITHUB_URL",
		"LASTMILE_LISTEN", "LASTMILE_WORKERS", "LASTMILE_MAX_ATTEMPTS", "LASTMILE_REDELIVERY_INTERVAL",
		"LASTMILE_REDELIVERY_WINDOW", "LASTMILE_LOG_LEVEL"}
	if len(ps) != len(wantVars) {
		t.Errorf("%d problems, want %d:\n%s", len(ps), len(wantVars), strings.Join(ps, "\n"))
	}
	msg := err.Error()
	for _, v := range wantVars {
		if !slices.ContainsFunc(ps, func(p string) bool { return strings.Contains(p, v) }) {
			t.Errorf("no problem names %s", v)
		}
		if !strings.Contains(msg, v) {
			t.Errorf("the one message does not name %s:\n%s", v, msg)
		}
	}
	if got := strings.Count(msg, "\n  - "); got != len(ps) {
		t.Errorf("message lists %d items, want one per problem:\n%s", got, msg)
	}
}

func TestLoadConfigNeverShowsSecrets(t *testing.T) {
	k := keys(t)
	secrets := append([]string{webhookSecret, apiToken, "TOPSECRET", k.rsa.D.String(), k.rsa.Primes[0].String()}, k.pkcs1Base64Lines...)
	leaks := func(t *testing.T, where, text string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s shows a secret (%.24s…):\n%.400s", where, s, text)
			}
		}
	}

	t.Run("valid config printed and logged", func(t *testing.T) {
		env := validEnv(t)
		env["LASTMILE_API_TOKEN"] = apiToken
		cfg, _, err := load(t, env)
		if err != nil {
			t.Fatal(err)
		}
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			leaks(t, "fmt "+verb+" of *Config", fmt.Sprintf(verb, cfg))
			leaks(t, "fmt "+verb+" of Config", fmt.Sprintf(verb, *cfg))
		}
		for _, h := range []func(*bytes.Buffer) slog.Handler{
			func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
			func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		} {
			var out bytes.Buffer
			log := slog.New(h(&out))
			log.Info("starting", "config", cfg, "secret", cfg.WebhookSecret, "token", cfg.APIToken, "key", cfg.PrivateKey)
			log.Info("starting", "config", *cfg)
			if !strings.Contains(out.String(), "REDACTED") {
				t.Errorf("secrets should show as REDACTED: %s", out.String())
			}
			leaks(t, "slog output", out.String())
		}
	})

	t.Run("errors about secret settings", func(t *testing.T) {
		tests := map[string]struct {
			env   map[string]string
			flags []string
		}{
			"short API token":      {env: map[string]string{"LASTMILE_API_TOKEN": "TOPSECRET-short"}},
			"short API token flag": {flags: []string{"--api-token", "TOPSECRET-shrt"}},
			"inline key not PEM":   {env: map[string]string{"LASTMILE_PRIVATE_KEY": "TOPSECRET key material, not PEM"}},
			"inline key corrupt":   {env: map[string]string{"LASTMILE_PRIVATE_KEY": strings.Replace(k.pkcs1, k.pkcs1Base64Lines[3], "TOPSECRET", 1)}},
			"with other problems":  {env: map[string]string{"LASTMILE_APP_ID": "x", "LASTMILE_PRIVATE_KEY": k.ecPKCS8}},
			"key file and inline":  {env: map[string]string{"LASTMILE_PRIVATE_KEY_FILE": "/nonexistent"}},
			// The key where its file's name goes: the name is not echoed.
			"key as the key file":          {env: map[string]string{"LASTMILE_PRIVATE_KEY": "", "LASTMILE_PRIVATE_KEY_FILE": k.pkcs1}},
			"key as the key file flag":     {env: map[string]string{"LASTMILE_PRIVATE_KEY": ""}, flags: []string{"--private-key-file", k.pkcs1}},
			"key's lines as the key file":  {env: map[string]string{"LASTMILE_PRIVATE_KEY": "", "LASTMILE_PRIVATE_KEY_FILE": strings.Join(k.pkcs1Base64Lines, "\n")}},
			"key on one line as key file":  {env: map[string]string{"LASTMILE_PRIVATE_KEY": "", "LASTMILE_PRIVATE_KEY_FILE": strings.Join(k.pkcs1Base64Lines, "")}},
			"key longer than a path":       {env: map[string]string{"LASTMILE_PRIVATE_KEY": "", "LASTMILE_PRIVATE_KEY_FILE": strings.Repeat(strings.Join(k.pkcs1Base64Lines, ""), 3)}},
			"key as the key file and more": {env: map[string]string{"LASTMILE_PRIVATE_KEY": "", "LASTMILE_PRIVATE_KEY_FILE": k.pkcs1, "LASTMILE_APP_ID": "x"}},
			"secret with bad value":        {flags: []string{"--webhook-secret", webhookSecret, "--app-id", "-1"}},
			// Unquoted, a value with spaces leaves its rest as arguments.
			"unquoted key flag":    {env: map[string]string{"LASTMILE_PRIVATE_KEY": ""}, flags: append([]string{"--private-key", "-----BEGIN"}, k.pkcs1Base64Lines...)},
			"unquoted secret flag": {flags: []string{"--webhook-secret", "my", "TOPSECRET", "words"}},
			"unquoted token flag":  {flags: []string{"--api-token=first-part-of-it", "TOPSECRET"}},
		}
		for name, tc := range tests {
			t.Run(name, func(t *testing.T) {
				env := validEnv(t)
				for k, v := range tc.env {
					env[k] = v
				}
				_, usage, err := load(t, env, tc.flags...)
				if err == nil {
					t.Fatal("LoadConfig accepted it")
				}
				leaks(t, "error", err.Error())
				leaks(t, "usage output", usage)
			})
		}
	})
}

func TestServeUsageListsEverySetting(t *testing.T) {
	// Every variable LoadConfig reads, observed rather than listed here.
	var read []string
	getenv := func(k string) string {
		read = append(read, k)
		return validEnv(t)[k]
	}
	if _, err := app.LoadConfig(nil, getenv, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	// The variables of the product specification must be among them.
	for _, v := range []string{"LASTMILE_LISTEN", "LASTMILE_DATABASE", "LASTMILE_WEBHOOK_SECRET", "LASTMILE_APP_ID",
		"LASTMILE_PRIVATE_KEY_FILE", "LASTMILE_PRIVATE_KEY", "LASTMILE_GITHUB_URL"} {
		if !slices.Contains(read, v) {
			t.Errorf("LoadConfig does not read %s", v)
		}
	}

	var usage bytes.Buffer
	app.PrintServeUsage(&usage)
	lines := strings.Split(usage.String(), "\n")
	for _, v := range read {
		flagName := "--" + strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(v, "LASTMILE_"), "_", "-"))
		i := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, v+" ") })
		if i < 0 {
			t.Errorf("usage does not list %s", v)
			continue
		}
		if fields := strings.Fields(lines[i]); len(fields) < 4 || fields[1] != flagName {
			t.Errorf("usage line %q: want the matching flag %s and a meaning", lines[i], flagName)
		}
		// The flag exists: a bad value is reported under its name.
		if _, err := app.LoadConfig([]string{flagName + "="}, getenvFrom(validEnv(t)), &bytes.Buffer{}); err != nil &&
			strings.Contains(err.Error(), "flag provided but not defined") {
			t.Errorf("%s is listed but not accepted", flagName)
		}
	}

	// --help prints the same text and is not an error to report.
	var help bytes.Buffer
	_, err := app.LoadConfig([]string{"--help"}, getenvFrom(nil), &help)
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v, want flag.ErrHelp", err)
	}
	if help.String() != usage.String() {
		t.Errorf("--help printed\n%s\nwant\n%s", help.String(), usage.String())
	}
}

func TestLoadConfigRefusesStrayArguments(t *testing.T) {
	_, _, err := load(t, validEnv(t), "--listen", ":1", "extra", "words")
	if err == nil || !strings.Contains(err.Error(), "extra words") {
		t.Errorf("error %v should name the unexpected arguments", err)
	}
	// The unknown flag is the error's; the usage table, printed for help
	// only, would bury the list of problems.
	_, usage, err := load(t, validEnv(t), "--no-such-flag")
	if err == nil || !strings.Contains(err.Error(), "no-such-flag") || usage != "" {
		t.Errorf("unknown flag: %v, want it named in the error and nothing printed (printed %q)", err, usage)
	}
}

// A stray argument, an unknown flag or a flag without its value is one of
// the problems the start-up message lists: the settings are checked too.
func TestStrayArgumentsAreListedWithTheOtherProblems(t *testing.T) {
	env := validEnv(t)
	env["LASTMILE_WEBHOOK_SECRET"] = ""
	env["LASTMILE_APP_ID"] = "twelve"
	for name, args := range map[string][]string{
		"stray argument":      {"--listen", ":1", "extra"},
		"unknown flag":        {"--listen", ":1", "--extra"},
		"flag without value":  {"--listen", ":1", "--extra=1", "--workers"},
		"bad flag syntax":     {"--listen", ":1", "---extra"},
		"after the arguments": {"extra", "--listen", ":1"},
	} {
		t.Run(name, func(t *testing.T) {
			_, usage, err := load(t, env, args...)
			if err == nil {
				t.Fatal("LoadConfig accepted it")
			}
			if !errors.Is(err, app.ErrFlags) {
				t.Errorf("error %v is not ErrFlags", err)
			}
			ps := problems(t, err)
			for _, v := range []string{"extra", "LASTMILE_WEBHOOK_SECRET", "LASTMILE_APP_ID"} {
				if !strings.Contains(err.Error(), v) {
					t.Errorf("the start-up message does not name %s:\n%s", v, err)
				}
			}
			if usage != "" {
				t.Errorf("a wrong command line printed %q besides the problems", usage)
			}
			if len(ps) < 3 || !strings.Contains(ps[0], "extra") ||
				!strings.HasPrefix(ps[len(ps)-2], "LASTMILE_WEBHOOK_SECRET") || !strings.HasPrefix(ps[len(ps)-1], "LASTMILE_APP_ID") {
				t.Errorf("problems %q, want the command line's first, then the secret's and the App ID's", ps)
			}
		})
	}

	// Settings are not ErrFlags.
	if _, _, err := load(t, env); err == nil || errors.Is(err, app.ErrFlags) {
		t.Errorf("a bad environment: %v, want a problem that is not ErrFlags", err)
	}
}

// A flag the command line names but that was not read (parsing stopped
// before it, at a stray argument or "--", or it lacks its value: the flags
// after an unknown flag are read, see TestLoadConfigGoesOnAfterAnUnknownFlag)
// is not known: the setting it would
// override is not reported from the environment.
func TestUnreadFlagsAreNotReportedAsTheirVariables(t *testing.T) {
	env := validEnv(t)
	env["LASTMILE_WEBHOOK_SECRET"] = ""
	env["LASTMILE_APP_ID"] = "twelve"
	env["LASTMILE_PRIVATE_KEY"] = ""
	keyFile := filepath.Join(t.TempDir(), "app.pem")
	if err := os.WriteFile(keyFile, []byte(keys(t).pkcs1), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string][]string{
		"after a stray argument":   {"extra", "--webhook-secret", "s", "--app-id", "7", "--private-key", "k"},
		"after the flags' end":     {"--", "--webhook-secret", "s", "--app-id", "7", "--private-key-file=" + keyFile},
		"missing its value":        {"--webhook-secret", "s", "--private-key-file", keyFile, "--app-id"},
		"after a flag's bad value": {"--workers", "many", "extra", "--webhook-secret=s", "--app-id", "7", "--private-key", "k"},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := load(t, env, args...)
			if err == nil {
				t.Fatal("LoadConfig accepted it")
			}
			ps := problems(t, err)
			for _, p := range ps {
				for _, v := range []string{"LASTMILE_WEBHOOK_SECRET", "LASTMILE_APP_ID", "LASTMILE_PRIVATE_KEY"} {
					if strings.Contains(p, v) {
						t.Errorf("problem %q: the command line names the flag of %s", p, v)
					}
				}
			}
			if len(ps) == 0 || !errors.Is(err, app.ErrFlags) {
				t.Errorf("problems %q, want the command line's", ps)
			}
		})
	}
}

func TestParsePrivateKey(t *testing.T) {
	k := keys(t)
	for name, pemText := range map[string]string{"PKCS#1": k.pkcs1, "PKCS#8": k.pkcs8, "with text around": "comment\n" + k.pkcs1 + "\ntrailer"} {
		t.Run(name, func(t *testing.T) {
			key, err := app.ParsePrivateKey([]byte(pemText))
			if err != nil {
				t.Fatal(err)
			}
			if !key.Equal(k.rsa) {
				t.Error("parsed a different key")
			}
		})
	}
}

// A LASTMILE_ variable a letter or two from a setting's name is a typo
// that would leave the setting at its default (LASTMILE_ADMIN_LISTN: the
// API and /metrics on the webhook's address): a problem, naming the
// setting meant, never the value. Other LASTMILE_ variables (the Action's,
// say) are ignored, and listed for the start-up warning.
func TestLoadConfigRefusesMisspelledVariables(t *testing.T) {
	t.Setenv("LASTMILE_ADMIN_LISTN", "127.0.0.1:19797")
	t.Setenv("LASTMILE_API_TOKN", "hunter2hunter2hunter2")
	t.Setenv("LASTMILE_SHA", "c0ffee")
	env := validEnv(t)
	getenv := func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		return os.Getenv(k)
	}
	_, err := app.LoadConfig(nil, getenv, &bytes.Buffer{})
	var ce *app.ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 2 {
		t.Fatalf("LoadConfig: %v, want the two misspelled variables as problems", err)
	}
	for _, want := range []string{"LASTMILE_ADMIN_LISTN is no setting: did you mean LASTMILE_ADMIN_LISTEN?", "LASTMILE_API_TOKN is no setting: did you mean LASTMILE_API_TOKEN?"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("problems %v lack %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "LASTMILE_SHA") {
		t.Errorf("problems %v show a value, or the Action's variable", err)
	}

	// Seen by the process but not by getenv (a test's own environment):
	// not this configuration's.
	if _, err := app.LoadConfig(nil, getenvFrom(env), &bytes.Buffer{}); err != nil {
		t.Errorf("LoadConfig with a getenv that does not see them: %v", err)
	}
	os.Unsetenv("LASTMILE_ADMIN_LISTN")
	os.Unsetenv("LASTMILE_API_TOKN")
	cfg, err := app.LoadConfig(nil, getenv, &bytes.Buffer{})
	if err != nil || !slices.Equal(cfg.IgnoredVariables, []string{"LASTMILE_SHA"}) {
		t.Errorf("LoadConfig: %v, ignored %v; want LASTMILE_SHA ignored", err, cfg)
	}
}

// A flag given no value takes the next flag as its value: refused, naming
// both flags, never showing the value (a secret's, here the API token).
func TestLoadConfigRefusesAFlagAsAValue(t *testing.T) {
	for _, args := range [][]string{
		{"--webhook-secret", "--api-token=hunter2hunter2hunter2"},
		{"--webhook-secret", "-api-token", "hunter2hunter2hunter2"},
		{"--listen", "--admin-listen=127.0.0.1:9797"},
	} {
		_, _, err := load(t, validEnv(t), args...)
		if err == nil || !strings.Contains(err.Error(), args[0]+" has no value") || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: %v, want %s refused as given no value, the value not shown", args, err, args[0])
		}
	}
	// The key's flag without a value is that problem alone, not also a
	// key missing (the environment's, which the flag replaces).
	if _, _, err := load(t, validEnv(t), "--private-key-file", "--listen=:0"); err == nil || len(problems(t, err)) != 1 {
		t.Errorf("--private-key-file without a value: %v, want that one problem", err)
	}
	// A value that starts with a dash but names no flag is a value.
	cfg, _, err := load(t, validEnv(t), "--webhook-secret", "-not-a-flag-secret")
	if err != nil || cfg.WebhookSecret.Reveal() != "-not-a-flag-secret" {
		t.Errorf("a secret that starts with a dash: %v", err)
	}
}

// Flags win over the environment for the App's key too: a key flag
// replaces the environment's key, given either way, instead of both being
// "set". A key whose line breaks were written as \n escapes says so.
func TestLoadConfigKeyFlagWinsOverTheEnvironment(t *testing.T) {
	k := keys(t)
	file := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(file, []byte(k.pkcs1), 0o600); err != nil {
		t.Fatal(err)
	}
	env := validEnv(t)
	env["LASTMILE_PRIVATE_KEY"] = "not the key"
	cfg, _, err := load(t, env, "--private-key-file", file)
	if err != nil || !cfg.Key.Equal(k.rsa) {
		t.Errorf("--private-key-file beside LASTMILE_PRIVATE_KEY: %v", err)
	}
	env = validEnv(t)
	delete(env, "LASTMILE_PRIVATE_KEY")
	env["LASTMILE_PRIVATE_KEY_FILE"] = filepath.Join(t.TempDir(), "gone.pem")
	cfg, _, err = load(t, env, "--private-key", k.pkcs1)
	if err != nil || !cfg.Key.Equal(k.rsa) {
		t.Errorf("--private-key beside LASTMILE_PRIVATE_KEY_FILE: %v", err)
	}

	env = validEnv(t)
	env["LASTMILE_PRIVATE_KEY"] = strings.ReplaceAll(strings.TrimSpace(k.pkcs1), "\n", `\n`)
	if _, _, err := load(t, env); err == nil || !strings.Contains(err.Error(), `holds \n escapes where its line breaks go`) {
		t.Errorf(`a key with \n escapes: %v`, err)
	}
}

// An unknown flag is named as the documentation names flags (--name), with
// the setting's flag it is a letter or two from, and the flags after it are
// checked all the same: the start-up message lists every problem.
func TestLoadConfigGoesOnAfterAnUnknownFlag(t *testing.T) {
	_, usage, err := load(t, validEnv(t), "--admin-listn=127.0.0.1:9797", "--workers=0", "--max-attempts", "0")
	ps := problems(t, err)
	if len(ps) != 3 || ps[0] != "flag provided but not defined: --admin-listn: did you mean --admin-listen?" ||
		!strings.HasPrefix(ps[1], "--workers: ") || !strings.HasPrefix(ps[2], "--max-attempts: ") {
		t.Errorf("problems %q, want the unknown flag with a suggestion, then --workers's and --max-attempts's", ps)
	}
	if !errors.Is(err, app.ErrFlags) || usage != "" {
		t.Errorf("error %v, printed %q: want ErrFlags, and nothing printed", err, usage)
	}
	// Far from every flag: no suggestion.
	if _, _, err := load(t, validEnv(t), "--colour"); err == nil || err.Error() != "invalid configuration:\n  - flag provided but not defined: --colour" {
		t.Errorf("--colour: %v", err)
	}
	// The flags after an unknown flag or one of bad syntax are read: an
	// unknown flag's value given in the next argument is not one.
	for _, tc := range []struct {
		args  []string
		first string // the first problem, up to ":" or " ("
	}{
		{[]string{"--colour", "--workers=0", "--webhook-secret", "s", "--app-id=7", "-private-key-file", keyFile(t)}, "flag provided but not defined: --colour"},
		{[]string{"--colour", "blue", "--workers=0"}, "flag provided but not defined: --colour"},
		{[]string{"-=x", "--workers=0", "--app-id", "7"}, "bad flag syntax: -"},
		{[]string{"---x", "--workers", "0"}, "bad flag syntax: ---x"},
	} {
		_, _, err := load(t, validEnv(t), tc.args...)
		ps := problems(t, err)
		if len(ps) != 2 || !strings.HasPrefix(ps[1], "--workers: ") {
			t.Errorf("%q: problems %q, want the first flag's, then --workers's", tc.args, ps)
			continue
		}
		if first, _, _ := strings.Cut(ps[0], " ("); first != tc.first {
			t.Errorf("%q: first problem %q, want %q", tc.args, ps[0], tc.first)
		}
	}
	// A flag the flag package's words name with one dash is named with two.
	if _, _, err := load(t, validEnv(t), "-workers=0", "--database"); err == nil || !strings.Contains(err.Error(), "\n  - flag needs an argument: --database") {
		t.Errorf("--database without its value: %v", err)
	}
}

// The value of an unknown flag (a secret's flag, misspelt) is passed over
// and never shown, nor is what follows it; the flags after it are read.
func TestLoadConfigNeverShowsTheValueOfAnUnknownFlag(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		readsID bool // whether --app-id, after the value, is read
	}{
		{[]string{"--webhok-secret", "hunter2hunter2", "--app-id=x"}, true},
		{[]string{"--webhok-secret", "---hunter2hunter2", "--app-id=x"}, true},
		{[]string{"--webhok-secret", "hunter2 hunter2", "--app-id", "x"}, true},
		{[]string{"--private-kee", "-----BEGIN", "RSA", "hunter2hunter2", "--app-id=x"}, false},
		{[]string{"--webhok-secret", "hunter2", "hunter2", "--app-id=x"}, false},
	} {
		_, _, err := load(t, validEnv(t), tc.args...)
		ps := problems(t, err)
		if len(ps) == 0 || !strings.HasPrefix(ps[0], "flag provided but not defined: "+tc.args[0]+": did you mean --") {
			t.Errorf("%q: problems %q, want the unknown flag first", tc.args, ps)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: the problems show the unknown flag's value:\n%v", tc.args, err)
		}
		if read := strings.Contains(err.Error(), "--app-id: "); read != tc.readsID {
			t.Errorf("%q: %v: --app-id read: %v, want %v", tc.args, err, read, tc.readsID)
		}
	}
}

// A flag the flag package cannot read at all (---name, -=value) is taken
// as an unknown one: named without its value, which is passed over, never
// shown (it may be a secret's), whether it follows "=" or comes next.
func TestLoadConfigNeverShowsTheValueOfABadFlag(t *testing.T) {
	for _, args := range [][]string{
		{"---webhook-secret=hunter2hunter2", "--app-id=x"},
		{"---webhook-secret", "hunter2hunter2", "--app-id=x"},
		{"-=hunter2hunter2", "--app-id=x"},
		{"--=hunter2hunter2", "--app-id=x"},
		{"--database=x.db", "---webhook-secret=hunter2hunter2", "--app-id=x"},
		{"--database", "x.db", "---webhook-secret", "hunter2hunter2", "--app-id=x"},
	} {
		_, _, err := load(t, validEnv(t), args...)
		ps := problems(t, err)
		bad := 0
		for _, p := range ps {
			if strings.HasPrefix(p, "bad flag syntax: ") {
				bad++
			}
		}
		if bad != 1 {
			t.Errorf("%q: problems %q, want the bad flag's once", args, ps)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: the problems show the bad flag's value:\n%v", args, err)
		}
		if !strings.Contains(err.Error(), "--app-id: ") {
			t.Errorf("%q: %v: --app-id after it not read", args, err)
		}
	}
}

// keyFile is a file holding a valid key.
func keyFile(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "app.pem")
	if err := os.WriteFile(path, []byte(keys(t).pkcs1), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
