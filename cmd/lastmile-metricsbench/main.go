// Command lastmile-metricsbench measures what a Prometheus scrape of
// lastmile costs when the history is long.
//
//	lastmile-metricsbench generate -db big.db [-deployments 1000000 -commits 3000000]
//	lastmile-metricsbench scrape -db big.db [-n 200]
//
// generate fills a new database with a synthetic, consistent history (see
// storage.Generate). scrape builds and starts a real `lastmile serve` on that
// database and, in the same run, a second one on a database with the same
// repositories and environments but a short history (the baseline: the same
// series, so the same exposition, and 1/200 of the history), then scrapes
// /metrics of each alternately and reports the latencies, their ratio, and
// the resident memory of each process. The ratio says what the length of
// the history costs a scrape.
// Everything runs on 127.0.0.1 and stops by itself.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lastmile-app/lastmile/storage"
)

const usage = `lastmile-metricsbench measures what a Prometheus scrape of lastmile costs when the history is long.

Usage:
  lastmile-metricsbench generate -db big.db [flags]   fill a new database with a synthetic history
  lastmile-metricsbench scrape -db big.db [flags]     scrape lastmile serve on it and on a short baseline, alternately

Run "lastmile-metricsbench COMMAND -h" for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "generate":
		err = generate(os.Args[2:])
	case "scrape":
		err = scrape(os.Args[2:])
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
		return
	default:
		err = fmt.Errorf("unknown command %q\n\n%s", os.Args[1], usage)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lastmile-metricsbench:", err)
		os.Exit(1)
	}
}

func generate(args []string) error {
	fs := flag.NewFlagSet("generate", flag.ExitOnError)
	path := fs.String("db", "", "database file to create (must not exist)")
	deployments := fs.Int("deployments", 1_000_000, "lastmile deployments")
	commits := fs.Int("commits", 3_000_000, "commits across the releases")
	repos := fs.Int("repositories", 50, "repositories")
	fs.Parse(args)
	if *path == "" {
		return errors.New("-db is required")
	}
	if _, err := os.Stat(*path); err == nil {
		return fmt.Errorf("%s exists: generate into a new file", *path)
	}
	start := time.Now()
	if err := generateInto(*path, *repos, *deployments, *commits); err != nil {
		return err
	}
	info, _ := os.Stat(*path)
	fmt.Printf("generated %s in %s: %.0f MB\n", *path, time.Since(start).Round(time.Second), float64(info.Size())/1e6)
	return nil
}

func generateInto(path string, repos, deployments, commits int) error {
	ctx := context.Background()
	db, err := storage.Open(ctx, path)
	if err != nil {
		return err
	}
	start := time.Now()
	err = db.Generate(ctx, storage.GenerateOptions{Repositories: repos, Deployments: deployments, Commits: commits, Seed: 1},
		func(n int) {
			if n%100_000 < 6_000 {
				fmt.Fprintf(os.Stderr, "\r%d deployments (%s)", n, time.Since(start).Round(time.Second))
			}
		})
	fmt.Fprintln(os.Stderr)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return err
}

func scrape(args []string) error {
	fs := flag.NewFlagSet("scrape", flag.ExitOnError)
	path := fs.String("db", "", "the generated database")
	n := fs.Int("n", 200, "scrapes of each server")
	repos := fs.Int("repositories", 50, "repositories of the generated database (the baseline gets as many)")
	short := fs.Int("baseline-deployments", 5000, "deployments in the baseline's history")
	bin := fs.String("lastmile", "", "lastmile binary (default: build ./cmd/lastmile)")
	fs.Parse(args)
	if *path == "" {
		return errors.New("-db is required")
	}
	dir, err := os.MkdirTemp("", "lastmile-metricsbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if *bin == "" {
		*bin = filepath.Join(dir, "lastmile")
		build := exec.Command("go", "build", "-o", *bin, "./cmd/lastmile")
		build.Stderr = os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build lastmile (run from the repository root): %w", err)
		}
	}
	big, err := startServe(*bin, *path, dir)
	if err != nil {
		return err
	}
	defer big.stop()
	baseDB := filepath.Join(dir, "baseline.db")
	if err := generateInto(baseDB, *repos, *short, *short*3); err != nil {
		return err
	}
	empty, err := startServe(*bin, baseDB, dir)
	if err != nil {
		return err
	}
	defer empty.stop()

	for _, s := range []*server{big, empty} { // warm up: first scrape opens files, fills caches
		for range 5 {
			if _, _, err := s.scrape(); err != nil {
				return err
			}
		}
	}
	var bigTimes, emptyTimes []time.Duration
	var bigBytes int
	for range *n {
		d, size, err := big.scrape()
		if err != nil {
			return err
		}
		bigTimes, bigBytes = append(bigTimes, d), size
		if d, _, err = empty.scrape(); err != nil {
			return err
		}
		emptyTimes = append(emptyTimes, d)
	}
	info, _ := os.Stat(*path)
	p := func(ds []time.Duration, q float64) time.Duration {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[int(q*float64(len(ds)-1))]
	}
	fmt.Printf("database: %s (%.0f MB); %d scrapes of each server, alternating\n", *path, float64(info.Size())/1e6, *n)
	fmt.Printf("%-28s %10s %10s %10s %12s %12s\n", "", "p50", "p99", "max", "peak RSS", "exposition")
	fmt.Printf("%-28s %10s %10s %10s %9.1f MB %9d B\n", "lastmile, long history", ms(p(bigTimes, .5)), ms(p(bigTimes, .99)), ms(p(bigTimes, 1)), big.peakRSS(), bigBytes)
	fmt.Printf("%-28s %10s %10s %10s %9.1f MB\n", fmt.Sprintf("baseline, %d deployments", *short), ms(p(emptyTimes, .5)), ms(p(emptyTimes, .99)), ms(p(emptyTimes, 1)), empty.peakRSS())
	fmt.Printf("ratio long history / baseline: p50 %.2f, p99 %.2f\n", float64(p(bigTimes, .5))/float64(p(emptyTimes, .5)), float64(p(bigTimes, .99))/float64(p(emptyTimes, .99)))
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

type server struct {
	cmd  *exec.Cmd
	addr string
}

func startServe(bin, db, dir string) (*server, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	cmd := exec.Command(bin, "serve")
	cmd.Env = []string{
		"LASTMILE_LISTEN=127.0.0.1:0", "LASTMILE_DATABASE=" + db, "LASTMILE_WEBHOOK_SECRET=bench", "LASTMILE_APP_ID=1",
		"LASTMILE_PRIVATE_KEY=" + string(pemKey), "LASTMILE_GITHUB_URL=http://127.0.0.1:9/", "LASTMILE_REDELIVERY_INTERVAL=0",
		"LASTMILE_LOG_LEVEL=warn", "PATH=" + os.Getenv("PATH"),
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Env = append(cmd.Env, "LASTMILE_LOG_LEVEL=info")
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var e struct{ Msg, Listen string }
			if json.Unmarshal(sc.Bytes(), &e) == nil && e.Msg == "lastmile starting" {
				addr <- e.Listen
			}
		}
	}()
	select {
	case a := <-addr:
		return &server{cmd: cmd, addr: a}, nil
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		return nil, errors.New("lastmile did not start")
	}
}

func (s *server) scrape() (time.Duration, int, error) {
	start := time.Now()
	resp, err := http.Get("http://" + s.addr + "/metrics")
	if err != nil {
		return 0, 0, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		return 0, 0, fmt.Errorf("scrape: %d %v", resp.StatusCode, err)
	}
	if !strings.Contains(string(b), "lastmile_deployments_total") && !strings.Contains(string(b), "lastmile_inbox_pending") {
		return 0, 0, errors.New("scrape: no lastmile metrics")
	}
	return time.Since(start), len(b), nil
}

// peakRSS reads the process's high-water resident set (VmHWM), in MB.
func (s *server) peakRSS() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func (s *server) stop() {
	s.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
	}
}
