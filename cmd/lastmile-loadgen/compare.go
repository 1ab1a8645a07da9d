package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	_ "modernc.org/sqlite" // the driver lastmile uses, to count the inbox read-only

	"github.com/lastmile-app/lastmile/storage"
)

// CompareOptions configures `lastmile-loadgen compare`.
type CompareOptions struct {
	Rounds        int
	Round         time.Duration // each measurement
	Warmup        time.Duration // per target, not measured
	Conns         int
	Size          int
	Repos         int
	Lastmile      string // a built lastmile binary; empty: go build ./cmd/lastmile
	Commit        string // the commit Lastmile was built from (bench.sh), for the report
	Keep          bool   // keep the temporary directory (database, logs)
	DrainMax      time.Duration
	Stop          string // "kill" (SIGKILL right after the last answer) or "term"
	GitHubLatency time.Duration
	LogLevel      string
	Timeout       time.Duration // whole run
	JSON          string        // write the summary here too
	Args          []string      // the command line, to print
}

// roundResult is one measurement of one target.
type roundResult struct {
	Round  int
	Target string
	*Result
	// lastmile only: deliveries the worker handled during the measurement
	// and how long the rest took to drain afterwards.
	Handled    int64
	DrainAfter time.Duration
	Drained    bool
}

// Summary is the outcome of a comparison, also written as JSON with -json.
type Summary struct {
	Command          string           `json:"command"`
	Commit           string           `json:"commit"`
	BodyBytes        int              `json:"body_bytes"`
	CommitsPerPush   int              `json:"commits_per_push"`
	Conns            int              `json:"connections"`
	BaselineRPS      float64          `json:"baseline_rps"`
	LastmileRPS      float64          `json:"lastmile_rps"`
	Ratio            float64          `json:"ratio"`
	RoundRatios      []float64        `json:"round_ratios"`
	LastmileP50MS    float64          `json:"lastmile_p50_ms"`
	LastmileP90MS    float64          `json:"lastmile_p90_ms"`
	LastmileP99MS    float64          `json:"lastmile_p99_ms"`
	LastmileMaxMS    float64          `json:"lastmile_max_ms"`
	BaselineP50MS    float64          `json:"baseline_p50_ms"`
	BaselineP99MS    float64          `json:"baseline_p99_ms"`
	LastmileHWM      int64            `json:"lastmile_vmhwm_bytes"`
	LastmileMaxRSS   int64            `json:"lastmile_max_sampled_rss_bytes"`
	BaselineHWM      int64            `json:"baseline_vmhwm_bytes"`
	LastmileCPUus    float64          `json:"lastmile_cpu_us_per_2xx"`
	BaselineCPUus    float64          `json:"baseline_cpu_us_per_2xx"`
	LastmileNon2xx   int64            `json:"lastmile_non_2xx"`
	BaselineNon2xx   int64            `json:"baseline_non_2xx"`
	WorkerRPS        float64          `json:"worker_handled_per_s"`
	Answered2xx      int              `json:"lastmile_answered_2xx"`
	FoundInInbox     int              `json:"lastmile_2xx_found_in_inbox"`
	InboxRows        int64            `json:"inbox_rows"`
	InboxByState     map[string]int64 `json:"inbox_by_state"`
	StoppedBy        string           `json:"stopped_by"`
	LogBytesPerDeliv float64          `json:"log_bytes_per_delivery"`
	Pass             bool             `json:"pass"`
}

func compare(ctx context.Context, o CompareOptions) error {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	budget := time.Duration(o.Rounds)*2*(o.Round+time.Second) + 2*o.Warmup
	if budget > o.Timeout {
		return fmt.Errorf("%d rounds of %s and warm-ups of %s do not fit in -timeout %s", o.Rounds, o.Round, o.Warmup, o.Timeout)
	}

	tmp, err := os.MkdirTemp("", "lastmile-bench-")
	if err != nil {
		return err
	}
	if o.Keep {
		fmt.Printf("keeping %s (database, lastmile.log)\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}

	bin := o.Lastmile
	if bin != "" {
		if bin, err = filepath.Abs(bin); err != nil {
			return err
		}
	} else {
		bin = filepath.Join(tmp, "lastmile")
		fmt.Print("building lastmile … ")
		t0 := time.Now()
		if err := goBuild(ctx, bin); err != nil {
			return err
		}
		fmt.Printf("done in %s\n", time.Since(t0).Round(100*time.Millisecond))
	}

	payloads, err := NewPayloads(o.Size, o.Repos)
	if err != nil {
		return err
	}
	secret := make([]byte, 20)
	_, _ = rand.Read(secret)
	secret = []byte(hex.EncodeToString(secret))

	stub, err := startGitHubStub(o.GitHubLatency)
	if err != nil {
		return err
	}
	defer stub.Close()

	lm, err := startLastmile(ctx, bin, tmp, secret, stub.URL(), o.LogLevel)
	if err != nil {
		return err
	}
	defer lm.kill()
	base, err := startBaselineChild(secret, o.Timeout)
	if err != nil {
		return err
	}
	defer base.stop()

	fmt.Printf("lastmile pid %d on %s (database %s), baseline pid %d on %s, GitHub stub on %s\n",
		lm.pid(), lm.addr, lm.db, base.pid(), base.addr, stub.URL())
	if env := passedEnv(); len(env) > 0 {
		fmt.Printf("lastmile environment from this one: %s\n", strings.Join(env, " "))
	}
	fmt.Printf("load: %d keep-alive connections, push deliveries of %d bytes (%d commits) over %d repositories, %s warm-up per target, %d rounds × %s per target, interleaved\n\n",
		o.Conns, payloads.Size, payloads.Commits, o.Repos, o.Warmup, o.Rounds, o.Round)

	var answered []string // every delivery ID lastmile answered 2xx, warm-up included
	var lmAccepted int64
	measure := func(round int, target string, d time.Duration) (*roundResult, error) {
		opts := LoadOptions{Secret: secret, Payloads: payloads, Conns: o.Conns, Duration: d, Timeout: 30 * time.Second}
		rr := &roundResult{Round: round, Target: target}
		var handledBefore int64
		if target == "lastmile" {
			opts.URL, opts.PID, opts.KeepIDs = "http://"+lm.addr+"/webhook", lm.pid(), true
			handledBefore = stub.contents.Load()
		} else {
			opts.URL, opts.PID = "http://"+base.addr+"/webhook", base.pid()
		}
		res, err := Run(ctx, opts)
		if err != nil {
			return nil, err
		}
		rr.Result = res
		if target == "lastmile" {
			answered = append(answered, res.IDs...)
			lmAccepted += res.OK
			rr.Handled = stub.contents.Load() - handledBefore
		}
		return rr, nil
	}
	// drain waits until the worker has handled every accepted delivery, so
	// that it does not steal CPU from the next measurement.
	drain := func(rr *roundResult) {
		t0 := time.Now()
		for stub.contents.Load() < lmAccepted && time.Since(t0) < o.DrainMax && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		rr.DrainAfter, rr.Drained = time.Since(t0), stub.contents.Load() >= lmAccepted
	}
	settle := func() { time.Sleep(time.Second) }

	var rounds []*roundResult
	const rowFormat = "%-7s  %-8s  %7s  %6s  %9s  %9s  %9s  %9s  %7s  %5s  %8s  %7s  %7s  %4s  %16s  %s\n"
	fmt.Printf(rowFormat, "round", "target", "2xx", "req/s", "p50", "p90", "p99", "max", "non-2xx", "conns", "RSS max", "CPU/2xx", "client", "busy", "worker handled", "drain after")
	printRound := func(rr *roundResult) {
		name := strconv.Itoa(rr.Round)
		if rr.Round == 0 {
			name = "warm-up"
		}
		handled, drained := "-", "-"
		if rr.Target == "lastmile" {
			handled = fmt.Sprintf("%d (%.0f/s)", rr.Handled, float64(rr.Handled)/rr.Elapsed.Seconds())
			switch {
			case rr.Drained:
				drained = rr.DrainAfter.Round(10 * time.Millisecond).String()
			case rr.DrainAfter == 0:
				drained = "(killed)"
			default:
				drained = "not drained after " + rr.DrainAfter.Round(10*time.Millisecond).String()
			}
		}
		rss := "-"
		if rr.Mem != nil {
			rss = mb(rr.Mem.MaxRSS)
		}
		fmt.Printf(rowFormat, name, rr.Target, strconv.FormatInt(rr.OK, 10), fmt.Sprintf("%.0f", rr.RPS()),
			ms(rr.Quantile(.5)), ms(rr.Quantile(.9)), ms(rr.Quantile(.99)), ms(rr.Quantile(1)),
			strconv.FormatInt(rr.NonOK(), 10), strconv.FormatInt(rr.Dials, 10), rss, us(rr.CPUPerOK()), us(rr.ClientCPUPerOK()),
			fmt.Sprintf("%.0f%%", 100*rr.MachineBusy), handled, drained)
		if rr.NonOK() > 0 {
			fmt.Printf("         %s non-2xx: %s\n", rr.Target, rr.StatusSummary())
		}
	}

	// Warm-up: both servers, not counted (the JIT-less Go runtime still
	// grows its heap, SQLite its cache and WAL, the kernel its socket buffers).
	for _, target := range []string{"lastmile", "baseline"} {
		rr, err := measure(0, target, o.Warmup)
		if err != nil {
			return err
		}
		if target == "lastmile" {
			drain(rr)
		}
		printRound(rr)
		settle()
	}

	var lmFinal *MemSample
	stoppedBy := ""
	for round := 1; round <= o.Rounds; round++ {
		order := []string{"baseline", "lastmile"}
		if round%2 == 0 {
			order = []string{"lastmile", "baseline"} // ABBA: drift cancels out
		}
		for _, target := range order {
			rr, err := measure(round, target, o.Round)
			if err != nil {
				return err
			}
			rounds = append(rounds, rr)
			if target == "lastmile" {
				if round == o.Rounds && o.Stop == "kill" {
					// Durability: kill lastmile right after its last answer,
					// with the worker still busy, before counting the inbox.
					rss, hwm, _ := readMem(lm.pid())
					lmFinal = &MemSample{PID: lm.pid(), HWM: hwm, LastRSS: rss}
					lm.kill()
					stoppedBy = "SIGKILL right after the last answer"
				} else {
					drain(rr)
				}
			}
			printRound(rr)
			settle()
		}
	}
	if lmFinal == nil {
		rss, hwm, _ := readMem(lm.pid())
		lmFinal = &MemSample{PID: lm.pid(), HWM: hwm, LastRSS: rss}
		if err := lm.term(30 * time.Second); err != nil {
			fmt.Println("lastmile shutdown:", err)
		}
		stoppedBy = "SIGTERM (graceful shutdown)"
	}
	_, baseHWM, _ := readMem(base.pid())
	base.stop()

	// Durability: every delivery answered 2xx must be in the inbox.
	found, rows, byState, err := countInbox(ctx, lm.db, answered)
	if err != nil {
		return fmt.Errorf("count the inbox: %w", err)
	}
	logInfo, _ := os.Stat(lm.log)

	s := summarize(o, payloads, rounds)
	s.LastmileHWM = lmFinal.HWM
	s.BaselineHWM = baseHWM
	s.Answered2xx, s.FoundInInbox, s.InboxRows, s.InboxByState = len(answered), found, rows, byState
	s.StoppedBy = stoppedBy
	if logInfo != nil && lmAccepted > 0 {
		s.LogBytesPerDeliv = float64(logInfo.Size()) / float64(lmAccepted)
	}
	s.Pass = s.Ratio >= 0.5 && s.LastmileP99MS <= 25 && s.LastmileHWM <= 100e6 && s.FoundInInbox == s.Answered2xx &&
		s.LastmileNon2xx == 0
	printSummary(s, o, stub, lm)
	if o.JSON != "" {
		b, _ := json.MarshalIndent(s, "", "  ")
		if err := os.WriteFile(o.JSON, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if s.FoundInInbox != s.Answered2xx {
		return fmt.Errorf("DURABILITY FAILURE: %d deliveries answered 2xx are not in the inbox", s.Answered2xx-s.FoundInInbox)
	}
	return nil
}

func summarize(o CompareOptions, p *Payloads, rounds []*roundResult) *Summary {
	commit := o.Commit
	if commit == "" {
		commit = gitDescribe()
	}
	s := &Summary{Command: reproduceCommand(o), Commit: commit, BodyBytes: p.Size, CommitsPerPush: p.Commits, Conns: o.Conns}
	type agg struct {
		ok      int64
		non     int64
		elapsed time.Duration
		lat     []time.Duration
		handled int64
		maxRSS  int64
		cpu     time.Duration
	}
	var a = map[string]*agg{"baseline": {}, "lastmile": {}}
	byRound := map[int]map[string]float64{}
	for _, rr := range rounds {
		x := a[rr.Target]
		x.ok += rr.OK
		x.non += rr.NonOK()
		x.elapsed += rr.Elapsed
		x.lat = append(x.lat, rr.Latencies...)
		x.handled += rr.Handled
		x.cpu += rr.CPU
		if rr.Mem != nil {
			x.maxRSS = max(x.maxRSS, rr.Mem.MaxRSS)
		}
		if byRound[rr.Round] == nil {
			byRound[rr.Round] = map[string]float64{}
		}
		byRound[rr.Round][rr.Target] = rr.RPS()
	}
	for _, x := range a {
		slices.Sort(x.lat)
	}
	b, l := a["baseline"], a["lastmile"]
	s.BaselineRPS = float64(b.ok) / b.elapsed.Seconds()
	s.LastmileRPS = float64(l.ok) / l.elapsed.Seconds()
	s.Ratio = s.LastmileRPS / s.BaselineRPS
	for r := 1; r <= o.Rounds; r++ {
		if v := byRound[r]; v != nil && v["baseline"] > 0 {
			s.RoundRatios = append(s.RoundRatios, v["lastmile"]/v["baseline"])
		}
	}
	toMS := func(d time.Duration) float64 { return float64(d) / 1e6 }
	s.LastmileP50MS, s.LastmileP90MS = toMS(quantile(l.lat, .5)), toMS(quantile(l.lat, .9))
	s.LastmileP99MS, s.LastmileMaxMS = toMS(quantile(l.lat, .99)), toMS(quantile(l.lat, 1))
	s.BaselineP50MS, s.BaselineP99MS = toMS(quantile(b.lat, .5)), toMS(quantile(b.lat, .99))
	s.LastmileMaxRSS = l.maxRSS
	if l.ok > 0 && b.ok > 0 {
		s.LastmileCPUus = float64(l.cpu) / 1e3 / float64(l.ok)
		s.BaselineCPUus = float64(b.cpu) / 1e3 / float64(b.ok)
	}
	s.LastmileNon2xx, s.BaselineNon2xx = l.non, b.non
	s.WorkerRPS = float64(l.handled) / l.elapsed.Seconds()
	return s
}

func printSummary(s *Summary, o CompareOptions, stub *githubStub, lm *lastmileProc) {
	verdict := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "FAIL"
	}
	ratios := make([]string, len(s.RoundRatios))
	for i, r := range s.RoundRatios {
		ratios[i] = fmt.Sprintf("%.2f", r)
	}
	fmt.Println()
	fmt.Println("summary (measured rounds pooled; warm-up excluded)")
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  baseline (echo + HMAC, no storage)\t%.0f req/s\tp50 %.2f ms  p99 %.2f ms  non-2xx %d  VmHWM %s\n",
		s.BaselineRPS, s.BaselineP50MS, s.BaselineP99MS, s.BaselineNon2xx, mb(s.BaselineHWM))
	fmt.Fprintf(tw, "  lastmile serve (durable intake)\t%.0f req/s\tp50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms  non-2xx %d\n",
		s.LastmileRPS, s.LastmileP50MS, s.LastmileP90MS, s.LastmileP99MS, s.LastmileMaxMS, s.LastmileNon2xx)
	fmt.Fprintf(tw, "  ratio lastmile/baseline\t%.2f\t(per round: %s)  target ≥ 0.50: %s\n", s.Ratio, strings.Join(ratios, ", "), verdict(s.Ratio >= .5))
	fmt.Fprintf(tw, "  server CPU per 2xx\t%.0f µs lastmile\t%.0f µs baseline (×%.1f); lastmile's includes its worker's share\n",
		s.LastmileCPUus, s.BaselineCPUus, s.LastmileCPUus/max(s.BaselineCPUus, 1e-9))
	fmt.Fprintf(tw, "  lastmile p99\t%.2f ms\ttarget ≤ 25 ms: %s\n", s.LastmileP99MS, verdict(s.LastmileP99MS <= 25))
	fmt.Fprintf(tw, "  lastmile peak RSS\t%s\t(VmHWM over the whole run; max VmRSS sampled while measured: %s)  target ≤ 100 MB: %s\n",
		mb(s.LastmileHWM), mb(s.LastmileMaxRSS), verdict(s.LastmileHWM <= 100e6))
	fmt.Fprintf(tw, "  worker (drains the inbox meanwhile)\t%.0f deliveries/s\thandled while measured (GitHub stub: %d token, %d contents calls)\n",
		s.WorkerRPS, stub.tokens.Load(), stub.contents.Load())
	states := []string{}
	for _, k := range []string{"pending", "done", "ignored", "dead"} {
		states = append(states, fmt.Sprintf("%s %d", k, s.InboxByState[k]))
	}
	fmt.Fprintf(tw, "  durability\t%d / %d\tdeliveries answered 2xx found in the inbox (warm-up included) after %s; inbox rows %d (%s): %s\n",
		s.FoundInInbox, s.Answered2xx, s.StoppedBy, s.InboxRows, strings.Join(states, ", "), verdict(s.FoundInInbox == s.Answered2xx))
	fmt.Fprintf(tw, "  lastmile log\t%.0f bytes/delivery\t(%s)\n", s.LogBytesPerDeliv, lm.log)
	tw.Flush()
	if u := stub.Unexpected(); len(u) > 0 {
		fmt.Println("  unexpected GitHub calls:", strings.Join(u, ", "))
	}
	fmt.Printf("  overall: %s\n", verdict(s.Pass))
	fmt.Printf("\nreproduce (commit %s):\n  %s\n", s.Commit, s.Command)
}

// countInbox opens the database as lastmile would (after a kill, SQLite
// recovers the WAL) and checks which answered IDs are there.
func countInbox(ctx context.Context, path string, ids []string) (found int, rows int64, byState map[string]int64, err error) {
	db, err := storage.OpenExisting(ctx, path)
	if err != nil {
		return 0, 0, nil, err
	}
	known, err := db.KnownDeliveries(ctx, ids)
	db.Close()
	if err != nil {
		return 0, 0, nil, err
	}
	for _, id := range ids {
		if known[id] {
			found++
		}
	}
	raw, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return found, 0, nil, err
	}
	defer raw.Close()
	byState = map[string]int64{}
	r, err := raw.QueryContext(ctx, `SELECT state, COUNT(*) FROM deliveries GROUP BY state`)
	if err != nil {
		return found, 0, nil, err
	}
	defer r.Close()
	for r.Next() {
		var st string
		var n int64
		if err := r.Scan(&st, &n); err != nil {
			return found, 0, nil, err
		}
		byState[st] = n
		rows += n
	}
	return found, rows, byState, r.Err()
}

// lastmileProc is a `lastmile serve` child process.
type lastmileProc struct {
	cmd  *exec.Cmd
	done chan error
	addr string
	db   string
	log  string
}

func (p *lastmileProc) pid() int { return p.cmd.Process.Pid }

func (p *lastmileProc) exited() bool {
	select {
	case err := <-p.done:
		p.done <- err
		return true
	default:
		return false
	}
}

func (p *lastmileProc) kill() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	p.done <- nil
}

func (p *lastmileProc) term(wait time.Duration) error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(wait):
		p.kill()
		return fmt.Errorf("did not stop within %s; killed", wait)
	}
}

func startLastmile(ctx context.Context, bin, dir string, secret []byte, githubURL, logLevel string) (*lastmileProc, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p := &lastmileProc{addr: addr, db: filepath.Join(dir, "lastmile.db"), log: filepath.Join(dir, "lastmile.log"), done: make(chan error, 1)}
	logf, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "serve")
	cmd.Dir = dir
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + dir,
		"LASTMILE_LISTEN=" + addr,
		"LASTMILE_DATABASE=" + p.db,
		"LASTMILE_WEBHOOK_SECRET=" + string(secret),
		"LASTMILE_APP_ID=4242",
		"LASTMILE_PRIVATE_KEY=" + string(keyPEM),
		"LASTMILE_GITHUB_URL=" + githubURL,
		"LASTMILE_REDELIVERY_INTERVAL=0",
		"LASTMILE_LOG_LEVEL=" + logLevel,
	}
	cmd.Env = append(cmd.Env, passedEnv()...)
	cmd.Stdout, cmd.Stderr = logf, logf
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p.cmd = cmd
	go func() { p.done <- cmd.Wait() }()

	deadline := time.Now().Add(30 * time.Second)
	for {
		if p.exited() {
			return nil, fmt.Errorf("lastmile serve exited at start:\n%s", tail(p.log, 20))
		}
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.kill()
			return nil, fmt.Errorf("lastmile serve not ready within 30s:\n%s", tail(p.log, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// passedEnv is the part of this process's environment handed on to
// lastmile: GOMAXPROCS, GOGC, GOMEMLIMIT, GODEBUG and every LASTMILE_
// setting the benchmark does not set itself (e.g. LASTMILE_WORKERS), so that
// a tuning can be measured without a flag here.
func passedEnv() []string {
	own := map[string]bool{"LASTMILE_LISTEN": true, "LASTMILE_DATABASE": true, "LASTMILE_WEBHOOK_SECRET": true,
		"LASTMILE_APP_ID": true, "LASTMILE_PRIVATE_KEY": true, "LASTMILE_PRIVATE_KEY_FILE": true,
		"LASTMILE_GITHUB_URL": true, "LASTMILE_REDELIVERY_INTERVAL": true, "LASTMILE_LOG_LEVEL": true}
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "GOMAXPROCS", k == "GOGC", k == "GOMEMLIMIT", k == "GODEBUG":
		case strings.HasPrefix(k, "LASTMILE_") && !own[k]:
		default:
			continue
		}
		out = append(out, kv)
	}
	slices.Sort(out)
	return out
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// moduleRoot is the directory of lastmile's go.mod, found from the working
// directory.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the lastmile module: run from the repository or pass -lastmile BINARY")
	}
	b, err := os.ReadFile(gomod)
	if err != nil {
		return "", err
	}
	if !strings.Contains(string(b), "module github.com/lastmile-app/lastmile\n") {
		return "", fmt.Errorf("%s is not lastmile's go.mod: run from the repository or pass -lastmile BINARY", gomod)
	}
	return filepath.Dir(gomod), nil
}

func goBuild(ctx context.Context, out string) error {
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/lastmile")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build ./cmd/lastmile: %w", err)
	}
	return nil
}

func gitDescribe() string {
	root, err := moduleRoot(context.Background())
	if err != nil {
		return "unknown"
	}
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	rev := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		rev += " (working tree has uncommitted changes)"
	}
	return rev
}

func reproduceCommand(o CompareOptions) string {
	root, err := moduleRoot(context.Background())
	if err != nil {
		root = "."
	}
	env := ""
	if e := passedEnv(); len(e) > 0 {
		env = strings.Join(e, " ") + " "
	}
	flags := fmt.Sprintf("-rounds %d -round %s -warmup %s -conns %d -size %d -repos %d -stop %s -github-latency %s -drain-max %s -log-level %s -timeout %s",
		o.Rounds, o.Round, o.Warmup, o.Conns, o.Size, o.Repos, o.Stop, o.GitHubLatency, o.DrainMax, o.LogLevel, o.Timeout)
	switch {
	case o.Commit != "":
		return fmt.Sprintf("cd %s && %scmd/lastmile-loadgen/bench.sh %s %s", root, env, o.Commit, flags)
	case o.Lastmile != "":
		return fmt.Sprintf("cd %s && %sgo run ./cmd/lastmile-loadgen compare %s -lastmile %s", root, env, flags, o.Lastmile)
	}
	return fmt.Sprintf("cd %s && %sgo run ./cmd/lastmile-loadgen compare %s", root, env, flags)
}
