package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/lastmile-app/lastmile/metrics/promtest"
)

// TestREADMEConfigurationTable keeps the README's configuration table true:
// the same variables, flags and defaults as the code, in the same order.
func TestREADMEConfigurationTable(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `(LASTMILE_[A-Z_]+)` \\| `(--[a-z-]+)` \\|([^|]*)\\|")
	var got []string
	for _, line := range strings.Split(string(readme), "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			got = append(got, m[1]+" "+m[2]+" "+strings.Trim(strings.TrimSpace(m[3]), "`"))
		}
	}
	var want []string
	for _, s := range settings {
		def := s.def
		if s.required {
			def = "(required)"
		}
		want = append(want, s.env+" --"+s.flag+" "+def)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("README configuration table:\n%s\n\nthe code:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestREADMECommandTableNamesTheDatabase keeps the README's command table
// true about --database: every row of a command that takes it shows it
// (serve's row, "[flags]", aside).
func TestREADMECommandTableNamesTheDatabase(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `lastmile ([a-z]+)([^`]*)` \\|")
	rows := 0
	for _, line := range strings.Split(string(readme), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil || strings.Contains(m[2], "[flags]") {
			continue
		}
		rows++
		var help bytes.Buffer
		if code := Main(context.Background(), []string{m[1], "--help"}, func(string) string { return "" }, &help, io.Discard); code != 0 {
			t.Fatalf("lastmile %s --help: exit %d", m[1], code)
		}
		takes := regexp.MustCompile(`(?m)^  -database\b`).Match(help.Bytes())
		if shows := strings.Contains(m[2], "[--database F]"); takes != shows {
			t.Errorf("README row `lastmile %s%s`: shows [--database F] %v, but the command takes --database: %v", m[1], m[2], shows, takes)
		}
	}
	if rows < 8 {
		t.Errorf("only %d rows of the command table found", rows)
	}
}

// TestREADMEPrometheusConfig keeps the set-up's prometheus.yml example
// true: it scrapes the admin address that step 4 appends to lastmile.env,
// an address lastmile takes as LASTMILE_ADMIN_LISTEN, and promtool accepts
// it (its rule file being the repository's).
func TestREADMEPrometheusConfig(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile("(?s)```yaml\n((?:[^`]*\n)?   scrape_configs:\n.*?)   ```").FindSubmatch(readme)
	if block == nil {
		t.Fatal("no yaml block with scrape_configs in the README")
	}
	config := regexp.MustCompile(`(?m)^   `).ReplaceAllString(string(block[1]), "")
	admin := regexp.MustCompile(`echo 'LASTMILE_ADMIN_LISTEN=([^']+)' >> lastmile.env`).FindSubmatch(readme)
	if admin == nil {
		t.Fatal("the README's step 4 sets no LASTMILE_ADMIN_LISTEN")
	}
	if !strings.Contains(config, "- targets: ['"+string(admin[1])+"']") {
		t.Errorf("the README's scrape config does not scrape %s, step 4's LASTMILE_ADMIN_LISTEN:\n%s", admin[1], config)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"LASTMILE_WEBHOOK_SECRET": "secret", "LASTMILE_APP_ID": "1", "LASTMILE_ADMIN_LISTEN": string(admin[1]),
		"LASTMILE_PRIVATE_KEY": string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))}
	if cfg, err := LoadConfig(nil, func(k string) string { return env[k] }, io.Discard); err != nil || cfg.AdminListen != string(admin[1]) {
		t.Errorf("LASTMILE_ADMIN_LISTEN=%s: %v", admin[1], err)
	}
	rules, err := filepath.Abs("../metrics/rules/lastmile.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	rule := regexp.MustCompile(`(?m)^  - (/\S+/lastmile\.rules\.yml)`)
	if !rule.MatchString(config) {
		t.Fatalf("the README's prometheus.yml loads no lastmile.rules.yml:\n%s", config)
	}
	config = rule.ReplaceAllString(config, "  - "+rules)
	path := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	promtool, err := promtest.Binary("promtool", "PROMTOOL")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "config", path).CombinedOutput(); err != nil {
		t.Errorf("promtool check config of the README's prometheus.yml: %v\n%s\n%s", err, out, config)
	}
}

// TestREADMEQuotesServeWithoutSettings keeps Troubleshooting's quote of
// lastmile serve started without its settings true: the same lines, and
// exit code 2.
func TestREADMEQuotesServeWithoutSettings(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), []string{"serve"}, func(string) string { return "" }, &stdout, &stderr)
	quote := "  $ lastmile serve\n" + regexp.MustCompile(`(?m)^(.)`).ReplaceAllString(stderr.String(), "  $1") + "  $ echo $?\n  " + strconv.Itoa(code) + "\n"
	if code != 2 || !strings.Contains(string(readme), quote) {
		t.Errorf("lastmile serve without settings: exit %d; the README should quote:\n%s", code, quote)
	}
}

// TestREADMETreeNamesEveryCommand keeps the README's Development tree true:
// its cmd/lastmile/ line names every command lastmile's usage lists, and
// no other.
func TestREADMETreeNamesEveryCommand(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^cmd/lastmile/ +the binary: (.+)$`).FindSubmatch(readme)
	if m == nil {
		t.Fatal("README has no cmd/lastmile/ line in its Development tree")
	}
	var listed []string
	for _, c := range strings.Split(string(m[1]), ",") {
		listed = append(listed, strings.TrimSpace(c))
	}
	var want []string
	for _, c := range regexp.MustCompile(`(?m)^  lastmile ([a-z]+)`).FindAllStringSubmatch(usage, -1) {
		if !slices.Contains(want, c[1]) {
			want = append(want, c[1])
		}
	}
	slices.Sort(listed)
	slices.Sort(want)
	if !slices.Equal(listed, want) {
		t.Errorf("README's cmd/lastmile/ line names %v; lastmile's usage lists %v", listed, want)
	}
}

// TestOperationsBackupFolderIsMade keeps the backup command of the
// operations guide one that can be pasted as it is: the folder it writes
// the backup to is made, lastmile's user's, before it.
func TestOperationsBackupFolderIsMade(t *testing.T) {
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(string(doc)), " ")
	cmd := regexp.MustCompile("`sudo -u lastmile lastmile backup [^`]* (/[^` ]+)/[^/`]+`").FindStringSubmatchIndex(text)
	if cmd == nil {
		t.Fatal("no `sudo -u lastmile lastmile backup … /FOLDER/FILE` in docs/operations.md")
	}
	folder := text[cmd[2]:cmd[3]]
	made := regexp.MustCompile("`sudo install -d -o lastmile (-m 0[0-7]00 )?" + regexp.QuoteMeta(folder) + "`").FindStringIndex(text)
	if made == nil || made[0] > cmd[0] {
		t.Errorf("docs/operations.md: no `sudo install -d -o lastmile … %s` before the backup command that writes there", folder)
	}
}
