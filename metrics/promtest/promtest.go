// Package promtest runs a real Prometheus server for tests, queries it
// through its HTTP API, and evaluates Grafana dashboards (lastmile's, under
// metrics/dashboards) against it the way Grafana would: template variables
// resolved from Prometheus and substituted into each panel query.
//
// The binaries come from Debian's prometheus package (.ci/run installs it):
// "prometheus" and "promtool" on PATH, or the paths in $PROMETHEUS and
// $PROMTOOL. A missing binary is an error, never a reason to skip.
package promtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary returns the path of a Prometheus tool: the value of envVar when it
// is set, else name looked up on PATH.
func Binary(name, envVar string) (string, error) {
	const install = "it comes with Debian's prometheus package, which .ci/run installs (apt-get install -y --no-install-recommends prometheus)"
	if p := os.Getenv(envVar); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w; %s", envVar, p, err, install)
		}
		return p, nil
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found on PATH (set %s to its path): %s", name, envVar, install)
	}
	return p, nil
}

// Dir returns the directory of lastmile's metrics package (the parent of
// this package), where dashboards/ and rules/ live. It relies on the
// source tree, as tests do.
func Dir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("promtest: no caller information")
	}
	return filepath.Dir(filepath.Dir(file))
}

// RuleFiles returns lastmile's Prometheus rule files (metrics/rules/*.yml).
func RuleFiles() ([]string, error) {
	files, err := filepath.Glob(filepath.Join(Dir(), "rules", "*.yml"))
	if err == nil && len(files) == 0 {
		err = errors.New("promtest: no rule files in " + filepath.Join(Dir(), "rules"))
	}
	return files, err
}

// Config describes the Prometheus server to start.
type Config struct {
	// Targets are host:port addresses scraped at /metrics, in one job.
	Targets []string
	// Job is the job name of the targets; default "lastmile".
	Job string
	// RuleFiles are loaded as rule_files; default none.
	RuleFiles []string
	// Interval is the scrape and rule evaluation interval; default 1s.
	Interval time.Duration
	// Binary is the prometheus binary; default Binary("prometheus", "PROMETHEUS").
	Binary string
}

// Server is a running Prometheus. Its methods are safe for concurrent use.
type Server struct {
	// URL is the server's root, http://127.0.0.1:PORT.
	URL      string
	Interval time.Duration

	cmd     *exec.Cmd
	dir     string
	logPath string
	exited  chan struct{}
	waitErr error
	http    *http.Client
	stop    sync.Once
}

// Start starts Prometheus on 127.0.0.1 with a fresh data directory and
// waits, within ctx, until it is ready. Stop it with Stop.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Job == "" {
		cfg.Job = "lastmile"
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	if cfg.Binary == "" {
		b, err := Binary("prometheus", "PROMETHEUS")
		if err != nil {
			return nil, err
		}
		cfg.Binary = b
	}
	var lastErr error
	for range 3 { // a free port can be taken between probing and binding
		s, err := start(ctx, cfg)
		if err == nil {
			return s, nil
		}
		lastErr = err
		if !errors.Is(err, errPortTaken) || ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

var errPortTaken = errors.New("listen address already in use")

func start(ctx context.Context, cfg Config) (*Server, error) {
	dir, err := os.MkdirTemp("", "promtest-")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Server, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return fail(err)
	}
	config, err := configYAML(cfg)
	if err != nil {
		return fail(err)
	}
	configPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configPath, config, 0o600); err != nil {
		return fail(err)
	}
	logPath := filepath.Join(dir, "prometheus.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return fail(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(cfg.Binary,
		"--config.file="+configPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=info",
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr() // never outlive the test binary where the OS allows it
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fail(fmt.Errorf("start %s: %w", cfg.Binary, err))
	}
	s := &Server{
		URL:      "http://" + addr,
		Interval: cfg.Interval,
		cmd:      cmd,
		dir:      dir,
		logPath:  logPath,
		exited:   make(chan struct{}),
		http:     &http.Client{Timeout: 10 * time.Second},
	}
	go func() {
		s.waitErr = cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	if err := s.waitReady(ctx); err != nil {
		log := s.Log()
		s.Stop()
		if strings.Contains(log, "address already in use") {
			return nil, errPortTaken
		}
		return nil, fmt.Errorf("prometheus did not become ready: %w\n%s", err, log)
	}
	return s, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func configYAML(cfg Config) ([]byte, error) {
	// JSON is YAML: no hand-made quoting.
	targets := cfg.Targets
	if targets == nil {
		targets = []string{}
	}
	rules := make([]string, 0, len(cfg.RuleFiles))
	for _, f := range cfg.RuleFiles {
		abs, err := filepath.Abs(f)
		if err != nil {
			return nil, err
		}
		rules = append(rules, abs)
	}
	iv := cfg.Interval.String()
	return json.MarshalIndent(map[string]any{
		"global": map[string]any{
			"scrape_interval":     iv,
			"scrape_timeout":      iv,
			"evaluation_interval": iv,
		},
		"rule_files": rules,
		"scrape_configs": []any{map[string]any{
			"job_name":       cfg.Job,
			"static_configs": []any{map[string]any{"targets": targets}},
		}},
	}, "", "  ")
}

func (s *Server) waitReady(ctx context.Context) error {
	return s.Poll(ctx, "GET /-/ready answers 200", func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/-/ready", nil)
		if err != nil {
			return false, err
		}
		resp, err := s.http.Do(req)
		if err != nil {
			return false, nil // not listening yet
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// Poll calls cond every 50ms until it reports true, returns an error, the
// server exits, or ctx ends; what says what is awaited, for the error.
func (s *Server) Poll(ctx context.Context, what string, cond func(context.Context) (bool, error)) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		ok, err := cond(ctx)
		if err != nil && ctx.Err() == nil {
			lastErr = err
			if !errors.Is(err, errRetry) {
				return fmt.Errorf("waiting until %s: %w", what, err)
			}
		}
		if ok {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("waiting until %s: prometheus exited: %v", what, s.waitErr)
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("waiting until %s: %w (last error: %v)", what, ctx.Err(), lastErr)
			}
			return fmt.Errorf("waiting until %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// errRetry marks a condition error that Poll retries rather than returns.
var errRetry = errors.New("retry")

// Log returns Prometheus's log so far (at most its last 8 KiB).
func (s *Server) Log() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > 8<<10 {
		b = b[len(b)-8<<10:]
	}
	return string(b)
}

// Stop terminates Prometheus (SIGTERM, then SIGKILL after 10s) and removes
// its data directory. It is safe to call more than once.
func (s *Server) Stop() {
	s.stop.Do(func() {
		select {
		case <-s.exited:
		default:
			s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.exited:
			case <-time.After(10 * time.Second):
				s.cmd.Process.Kill()
				<-s.exited
			}
		}
		os.RemoveAll(s.dir)
	})
}

// Sample is one element of an instant vector (or a scalar, without labels).
type Sample struct {
	Labels map[string]string
	Value  float64
	Time   time.Time
}

func (s Sample) String() string {
	return fmt.Sprintf("%s %g @%s", FormatLabels(s.Labels), s.Value, s.Time.UTC().Format("15:04:05.000"))
}

// FormatLabels renders labels as {a="1", b="2"}, sorted.
func FormatLabels(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%q", k, l[k])
	}
	b.WriteByte('}')
	return b.String()
}

type apiResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
}

func (s *Server) get(ctx context.Context, path string, params url.Values, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+path+"?"+params.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	var r apiResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("%s: HTTP %d: %.200s", path, resp.StatusCode, body)
	}
	if r.Status != "success" {
		return fmt.Errorf("%s %s: %s: %s", path, params.Encode(), r.ErrorType, r.Error)
	}
	return json.Unmarshal(r.Data, out)
}

// Query evaluates an instant query at time at (now when zero). A scalar
// result is one sample without labels; a string or matrix result is an
// error.
func (s *Server) Query(ctx context.Context, expr string, at time.Time) ([]Sample, error) {
	params := url.Values{"query": {expr}}
	if !at.IsZero() {
		params.Set("time", FormatTime(at))
	}
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := s.get(ctx, "/api/v1/query", params, &data); err != nil {
		return nil, err
	}
	switch data.ResultType {
	case "vector":
		var vec []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(data.Result, &vec); err != nil {
			return nil, err
		}
		out := make([]Sample, 0, len(vec))
		for _, v := range vec {
			smp, err := parsePoint(v.Value)
			if err != nil {
				return nil, err
			}
			smp.Labels = v.Metric
			if smp.Labels == nil {
				smp.Labels = map[string]string{}
			}
			out = append(out, smp)
		}
		return out, nil
	case "scalar":
		var p [2]any
		if err := json.Unmarshal(data.Result, &p); err != nil {
			return nil, err
		}
		smp, err := parsePoint(p)
		if err != nil {
			return nil, err
		}
		smp.Labels = map[string]string{}
		return []Sample{smp}, nil
	default:
		return nil, fmt.Errorf("query %q: result type %s, want vector or scalar", expr, data.ResultType)
	}
}

func parsePoint(p [2]any) (Sample, error) {
	ts, ok := p[0].(float64)
	str, ok2 := p[1].(string)
	if !ok || !ok2 {
		return Sample{}, fmt.Errorf("malformed sample %v", p)
	}
	v, err := strconv.ParseFloat(str, 64)
	if err != nil {
		return Sample{}, err
	}
	return Sample{Value: v, Time: UnixSeconds(ts)}, nil
}

// FormatTime renders t as the API's Unix seconds with millisecond precision.
func FormatTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64)
}

// LabelValues returns the values of label among the series that match the
// selector (all series when empty) between start and end.
func (s *Server) LabelValues(ctx context.Context, label, selector string, start, end time.Time) ([]string, error) {
	params := url.Values{"start": {FormatTime(start)}, "end": {FormatTime(end)}}
	if selector != "" {
		params.Set("match[]", selector)
	}
	var out []string
	err := s.get(ctx, "/api/v1/label/"+url.PathEscape(label)+"/values", params, &out)
	return out, err
}

// Rule is one rule as /api/v1/rules reports it.
type Rule struct {
	Name           string    `json:"name"`
	Query          string    `json:"query"`
	Type           string    `json:"type"` // recording or alerting
	Health         string    `json:"health"`
	LastError      string    `json:"lastError"`
	State          string    `json:"state"` // alerting rules: inactive, pending, firing
	LastEvaluation time.Time `json:"lastEvaluation"`
}

// RuleGroup is a rule group as /api/v1/rules reports it.
type RuleGroup struct {
	Name           string    `json:"name"`
	File           string    `json:"file"`
	Rules          []Rule    `json:"rules"`
	LastEvaluation time.Time `json:"lastEvaluation"`
}

// Rules returns the loaded rule groups and their state.
func (s *Server) Rules(ctx context.Context) ([]RuleGroup, error) {
	var data struct {
		Groups []RuleGroup `json:"groups"`
	}
	err := s.get(ctx, "/api/v1/rules", url.Values{}, &data)
	return data.Groups, err
}

// Target is a scrape target as /api/v1/targets reports it.
type Target struct {
	ScrapeURL  string `json:"scrapeUrl"`
	Health     string `json:"health"`
	LastError  string `json:"lastError"`
	ScrapePool string `json:"scrapePool"`
}

// Targets returns the active scrape targets.
func (s *Server) Targets(ctx context.Context) ([]Target, error) {
	var data struct {
		Active []Target `json:"activeTargets"`
	}
	err := s.get(ctx, "/api/v1/targets", url.Values{"state": {"active"}}, &data)
	return data.Active, err
}

// WaitForSamples polls expr at the current time until it returns samples
// that ok accepts, and returns them. Query errors end the wait at once.
func (s *Server) WaitForSamples(ctx context.Context, expr string, ok func([]Sample) bool) ([]Sample, error) {
	var got []Sample
	err := s.Poll(ctx, fmt.Sprintf("%s gives the expected samples", expr), func(ctx context.Context) (bool, error) {
		v, err := s.Query(ctx, expr, time.Time{})
		if err != nil {
			return false, err
		}
		got = v
		return ok(v), nil
	})
	if err != nil {
		return got, fmt.Errorf("%w; last result: %v", err, got)
	}
	return got, nil
}

// WaitForTargetsUp waits until every target is scraped successfully.
func (s *Server) WaitForTargetsUp(ctx context.Context) error {
	var last []Target
	err := s.Poll(ctx, "every target is up", func(ctx context.Context) (bool, error) {
		ts, err := s.Targets(ctx)
		if err != nil {
			return false, err
		}
		last = ts
		if len(ts) == 0 {
			return false, nil
		}
		for _, t := range ts {
			if t.Health != "up" {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		var b bytes.Buffer
		for _, t := range last {
			fmt.Fprintf(&b, "\n  %s: %s %s", t.ScrapeURL, t.Health, t.LastError)
		}
		return fmt.Errorf("%w%s", err, b.String())
	}
	return nil
}

// WaitForEvaluation waits until Prometheus has scraped every target at
// least minScrapes times and every rule group with recording rules has
// recorded samples at least one interval after the sample time after, and
// returns the time of the latest scrape. Queries evaluated at that time see
// raw series exactly as scraped then (no extrapolation to a later time) and
// recorded series computed from samples at or after after.
func (s *Server) WaitForEvaluation(ctx context.Context, after time.Time, minScrapes int) (time.Time, error) {
	var at time.Time
	state := "nothing scraped yet"
	err := s.Poll(ctx, "the rules have evaluated the latest samples", func(ctx context.Context) (bool, error) {
		last, err := s.Query(ctx, `max(timestamp(up))`, time.Time{})
		if err != nil || len(last) != 1 {
			return false, err
		}
		at = UnixSeconds(last[0].Value)
		scrapes, err := s.Query(ctx, `min(count_over_time(up[1h]))`, at)
		if err != nil || len(scrapes) != 1 {
			return false, err
		}
		state = fmt.Sprintf("%g scrapes, the latest at %s", scrapes[0].Value, at.Format(time.RFC3339Nano))
		if scrapes[0].Value < float64(minScrapes) {
			return false, nil
		}
		groups, err := s.Rules(ctx)
		if err != nil {
			return false, err
		}
		for _, g := range groups {
			// The rules of a group share its evaluation time: the first
			// that recorded something at the group's latest evaluation
			// tells it (one that recorded nothing then is stale, absent).
			evaluated, recorder := time.Time{}, false
			for _, r := range g.Rules {
				if r.Type != "recording" {
					continue
				}
				recorder = true
				v, err := s.Query(ctx, "max(timestamp("+r.Name+"))", at)
				if err != nil {
					return false, err
				}
				if len(v) == 1 {
					evaluated = UnixSeconds(v[0].Value)
					break
				}
			}
			if !recorder {
				continue
			}
			if evaluated.Before(after.Add(s.Interval)) {
				state += fmt.Sprintf("; group %s last recorded at %s", g.Name, evaluated.Format(time.RFC3339Nano))
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("%w (%s)", err, state)
	}
	return at, nil
}

// UnixSeconds converts a timestamp() value to a time, to the millisecond.
func UnixSeconds(v float64) time.Time {
	return time.UnixMilli(int64(math.Round(v * 1000)))
}

// StartT starts Prometheus for a test: it scrapes targets every second,
// loads lastmile's rules (RuleFiles), and stops when the test ends. It
// fails the test if Prometheus is missing or does not start within a
// minute.
func StartT(t testing.TB, targets ...string) *Server {
	t.Helper()
	rules, err := RuleFiles()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx, Config{Targets: targets, RuleFiles: rules})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}
