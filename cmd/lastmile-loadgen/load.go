package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	crand "crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// LoadOptions is one measurement: Conns keep-alive connections, each
// sending one request after the other, until Duration has passed or
// Requests were sent (whichever comes first; zero means no limit, but one
// of them must be set).
type LoadOptions struct {
	URL      string
	Secret   []byte
	Payloads *Payloads
	Conns    int
	Duration time.Duration
	Requests int64
	Timeout  time.Duration // per request
	PID      int           // if set, the target's memory is sampled
	KeepIDs  bool          // keep the delivery IDs answered 2xx
}

// Result is what one measurement saw.
type Result struct {
	Target    string
	Conns     int
	Sent      int64 // requests started
	OK        int64 // answered 2xx
	Status    map[int]int64
	Errors    map[string]int64 // no answer, by cause
	Elapsed   time.Duration
	Latencies []time.Duration // of every answered request, sorted
	Dials     int64           // TCP connections opened
	BodyBytes int
	IDs       []string // answered 2xx, when KeepIDs
	Mem       *MemSample
	CPU       time.Duration // the target's user+system CPU time during the run (with PID)
	ClientCPU time.Duration // this process's, during the run
	// MachineBusy is the fraction of all the machine's CPU time that was
	// busy during the run (every process: target, client and the rest).
	MachineBusy float64
}

// ClientCPUPerOK is the load generator's own CPU time per 2xx answer.
func (r *Result) ClientCPUPerOK() time.Duration {
	if r.OK == 0 {
		return 0
	}
	return r.ClientCPU / time.Duration(r.OK)
}

// CPUPerOK is the target's CPU time per 2xx answer: its cost per delivery,
// much less sensitive to a noisy machine than throughput.
func (r *Result) CPUPerOK() time.Duration {
	if r.OK == 0 {
		return 0
	}
	return r.CPU / time.Duration(r.OK)
}

// RPS is the throughput of 2xx answers.
func (r *Result) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.OK) / r.Elapsed.Seconds()
}

// Quantile returns the q-quantile of the answered requests' latency.
func (r *Result) Quantile(q float64) time.Duration { return quantile(r.Latencies, q) }

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*q+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// NonOK sums the requests that did not end in a 2xx answer.
func (r *Result) NonOK() int64 { return r.Sent - r.OK }

// StatusSummary lists answers and failures by status, e.g. "202:51234".
func (r *Result) StatusSummary() string {
	var parts []string
	codes := make([]int, 0, len(r.Status))
	for c := range r.Status {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%d:%d", c, r.Status[c]))
	}
	errs := make([]string, 0, len(r.Errors))
	for e := range r.Errors {
		errs = append(errs, e)
	}
	slices.Sort(errs)
	for _, e := range errs {
		parts = append(parts, fmt.Sprintf("%s:%d", e, r.Errors[e]))
	}
	return strings.Join(parts, " ")
}

type connStats struct {
	sent, ok  int64
	status    map[int]int64
	errors    map[string]int64
	latencies []time.Duration
	ids       []string
}

// Run drives the target and returns what it saw. It stops by itself; ctx
// ending stops it early.
func Run(ctx context.Context, o LoadOptions) (*Result, error) {
	if o.Conns < 1 {
		return nil, errors.New("need at least one connection")
	}
	if o.Duration <= 0 && o.Requests <= 0 {
		return nil, errors.New("set a duration or a request count")
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	var sampler *memSampler
	var cpu0 time.Duration
	self0, _ := readCPU(os.Getpid())
	busy0, total0, _ := readMachineCPU()
	if o.PID > 0 {
		sampler = startMemSampler(o.PID, 50*time.Millisecond)
		cpu0, _ = readCPU(o.PID)
	}
	var dials, budget atomic.Int64
	budget.Store(o.Requests)
	stats := make([]*connStats, o.Conns)
	var wg sync.WaitGroup
	start := time.Now()
	var deadline time.Time
	if o.Duration > 0 {
		deadline = start.Add(o.Duration)
	}
	for c := range o.Conns {
		st := &connStats{status: map[int]int64{}, errors: map[string]int64{}}
		stats[c] = st
		wg.Add(1)
		go func() {
			defer wg.Done()
			runConn(ctx, o, st, &dials, &budget, deadline)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	self1, _ := readCPU(os.Getpid())
	busy1, total1, _ := readMachineCPU()
	res := &Result{Conns: o.Conns, ClientCPU: self1 - self0, Status: map[int]int64{}, Errors: map[string]int64{}, Elapsed: elapsed,
		Dials: dials.Load(), BodyBytes: o.Payloads.Size}
	for _, st := range stats {
		res.Sent += st.sent
		res.OK += st.ok
		for k, v := range st.status {
			res.Status[k] += v
		}
		for k, v := range st.errors {
			res.Errors[k] += v
		}
		res.Latencies = append(res.Latencies, st.latencies...)
		res.IDs = append(res.IDs, st.ids...)
	}
	slices.Sort(res.Latencies)
	if total1 > total0 {
		res.MachineBusy = float64(busy1-busy0) / float64(total1-total0)
	}
	if sampler != nil {
		res.Mem = sampler.stop()
		if cpu1, err := readCPU(o.PID); err == nil && cpu1 >= cpu0 {
			res.CPU = cpu1 - cpu0
		}
	}
	return res, ctx.Err()
}

func runConn(ctx context.Context, o LoadOptions, st *connStats, dials, budget *atomic.Int64, deadline time.Time) {
	// One transport per connection, allowed one connection: exactly Conns
	// keep-alive connections, each used by one request at a time.
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return dialer.DialContext(ctx, network, addr)
		},
		MaxIdleConns:        1,
		MaxIdleConnsPerHost: 1,
		MaxConnsPerHost:     1,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: o.Timeout}

	var seed [32]byte
	_, _ = crand.Read(seed[:])
	rng := rand.New(rand.NewChaCha8(seed))
	hookID := strconv.FormatUint(uint64(binary.LittleEndian.Uint32(seed[:4])%900000000+100000000), 10)
	var buf []byte
	respBuf := make([]byte, 4096)
	for ctx.Err() == nil {
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return
		}
		if o.Requests > 0 && budget.Add(-1) < 0 {
			return
		}
		buf = o.Payloads.Next(rng, buf)
		id := newDeliveryID(rng)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.URL, bytes.NewReader(buf))
		if err != nil {
			st.errors["request:"+err.Error()]++
			return
		}
		// The headers GitHub sends, spelled as GitHub spells them.
		h := req.Header
		h["Accept"] = []string{"*/*"}
		h["Content-Type"] = []string{"application/json"}
		h["User-Agent"] = []string{"GitHub-Hookshot/8a3c1f2"}
		h["X-GitHub-Delivery"] = []string{id}
		h["X-GitHub-Event"] = []string{"push"}
		h["X-GitHub-Hook-ID"] = []string{hookID}
		h["X-GitHub-Hook-Installation-Target-ID"] = []string{"424242"}
		h["X-GitHub-Hook-Installation-Target-Type"] = []string{"integration"}
		h["X-Hub-Signature"] = []string{"sha1=" + hexMAC(sha1.New, o.Secret, buf)}
		h["X-Hub-Signature-256"] = []string{"sha256=" + hexMAC(sha256.New, o.Secret, buf)}

		st.sent++
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				st.sent--
				return
			}
			st.errors[errorKind(err)]++
			continue
		}
		for {
			if _, rerr := resp.Body.Read(respBuf); rerr != nil {
				if rerr != io.EOF {
					err = rerr
				}
				break
			}
		}
		resp.Body.Close()
		took := time.Since(t0)
		if err != nil {
			st.errors[errorKind(err)]++
			continue
		}
		st.latencies = append(st.latencies, took)
		st.status[resp.StatusCode]++
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			st.ok++
			if o.KeepIDs {
				st.ids = append(st.ids, id)
			}
		}
	}
}

func hexMAC(h func() hash.Hash, key, body []byte) string {
	mac := hmac.New(h, key)
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "closed"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "error"
}

// MemSample is the target's resident memory, from /proc/PID/status.
type MemSample struct {
	PID       int
	HWM       int64 // VmHWM at the end: the peak over the process's life
	MaxRSS    int64 // the largest VmRSS sampled during the run
	LastRSS   int64
	Samples   int
	ReadError string
}

type memSampler struct {
	pid  int
	quit chan struct{}
	done chan *MemSample
}

func startMemSampler(pid int, every time.Duration) *memSampler {
	s := &memSampler{pid: pid, quit: make(chan struct{}), done: make(chan *MemSample, 1)}
	go func() {
		m := &MemSample{PID: pid}
		t := time.NewTicker(every)
		defer t.Stop()
		sample := func() {
			rss, hwm, err := readMem(pid)
			if err != nil {
				m.ReadError = err.Error()
				return
			}
			m.Samples++
			m.LastRSS, m.HWM = rss, hwm
			m.MaxRSS = max(m.MaxRSS, rss)
		}
		sample()
		for {
			select {
			case <-t.C:
				sample()
			case <-s.quit:
				sample()
				s.done <- m
				return
			}
		}
	}()
	return s
}

func (s *memSampler) stop() *MemSample {
	close(s.quit)
	return <-s.done
}

// readMem returns VmRSS and VmHWM of pid, in bytes.
func readMem(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		n, perr := strconv.ParseInt(f[0], 10, 64)
		if perr != nil {
			continue
		}
		if k == "VmRSS" {
			rss = n << 10
		} else {
			hwm = n << 10
		}
	}
	if rss == 0 && hwm == 0 {
		return 0, 0, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
	}
	return rss, hwm, nil
}

// readCPU returns the user+system CPU time of pid (all its threads), from
// /proc/PID/stat (clock ticks of 10 ms).
func readCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: fields start after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// readMachineCPU returns the busy and total jiffies of all CPUs, from the
// first line of /proc/stat.
func readMachineCPU() (busy, total int64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, errors.New("/proc/stat: unexpected format")
	}
	for i, v := range f[1:] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, 0, err
		}
		if i >= 7 { // guest time is already counted in user
			break
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total, nil
}

func mb(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/1e3) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }
