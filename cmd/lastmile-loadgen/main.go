// Command lastmile-loadgen measures lastmile's webhook intake.
//
//	lastmile-loadgen compare [flags]   build lastmile, run it and the baseline, measure both alternately
//	lastmile-loadgen run -url URL ...  drive one running target
//	lastmile-loadgen baseline [flags]  serve the baseline: echo + HMAC check, 202, no storage
//	lastmile-loadgen profile [flags]   run lastmile in-process under load and write pprof profiles
//
// Every request is a push delivery signed as GitHub signs it, sent over a
// fixed number of keep-alive connections to 127.0.0.1. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

const usage = `lastmile-loadgen measures lastmile's webhook intake (POST /webhook).

Usage:
  lastmile-loadgen compare [flags]          build lastmile, start it (fresh database) and the baseline,
                                            measure both alternately, check the inbox (the benchmark)
  lastmile-loadgen run -url URL [flags]     drive one running target and report
  lastmile-loadgen baseline [flags]         serve the baseline: echo + HMAC check, 202, no storage
  lastmile-loadgen profile [flags]          run lastmile in-process under load, write pprof profiles

Run "lastmile-loadgen COMMAND -h" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "lastmile-loadgen:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "compare":
		return cmdCompare(ctx, args[1:])
	case "run":
		return cmdRun(ctx, args[1:])
	case "baseline":
		return cmdBaseline(ctx, args[1:])
	case "profile":
		return cmdProfile(ctx, args[1:])
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
		return nil
	}
	return fmt.Errorf("unknown command %q\n\n%s", args[0], usage)
}

// loadFlags are the flags that shape the load, shared by the commands.
type loadFlags struct {
	conns int
	size  int
	repos int
}

func (l *loadFlags) add(fs *flag.FlagSet) {
	fs.IntVar(&l.conns, "conns", 16, "concurrent keep-alive connections (each sends one request at a time)")
	fs.IntVar(&l.size, "size", 8000, "bytes of every push delivery (7000-8192: GitHub's example with commits added)")
	fs.IntVar(&l.repos, "repos", 16, "repositories the pushes are spread over (the worker handles one delivery per repository at a time)")
}

func (l *loadFlags) check() error {
	if l.conns < 1 || l.conns > 1024 {
		return fmt.Errorf("-conns %d: use 1 to 1024", l.conns)
	}
	if l.size < 1000 || l.size > 1<<20 {
		return fmt.Errorf("-size %d: use 1000 to 1048576", l.size)
	}
	return nil
}

func cmdCompare(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("lastmile-loadgen compare", flag.ContinueOnError)
	var lf loadFlags
	lf.add(fs)
	o := CompareOptions{Args: args}
	fs.IntVar(&o.Rounds, "rounds", 3, "measured rounds; each measures both targets, in alternating order")
	fs.DurationVar(&o.Round, "round", 10*time.Second, "length of one measurement")
	fs.DurationVar(&o.Warmup, "warmup", 3*time.Second, "unmeasured load on each target first")
	fs.StringVar(&o.Lastmile, "lastmile", "", "a lastmile binary to run (default: go build ./cmd/lastmile)")
	fs.StringVar(&o.Commit, "lastmile-commit", "", "the commit -lastmile was built from, for the report (set by bench.sh)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the temporary directory with the database and lastmile's log")
	fs.DurationVar(&o.DrainMax, "drain-max", time.Minute, "longest wait for lastmile's worker to drain the inbox between measurements")
	fs.StringVar(&o.Stop, "stop", "kill", "how lastmile ends before the inbox is counted: kill (SIGKILL right after its last answer) or term")
	fs.DurationVar(&o.GitHubLatency, "github-latency", 0, "delay of the GitHub stub's answers")
	fs.StringVar(&o.LogLevel, "log-level", "info", "lastmile's LASTMILE_LOG_LEVEL")
	fs.DurationVar(&o.Timeout, "timeout", 15*time.Minute, "bound on the whole run")
	fs.StringVar(&o.JSON, "json", "", "also write the summary to this file as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := lf.check(); err != nil {
		return err
	}
	if o.Rounds < 1 || o.Round <= 0 {
		return errors.New("need at least one round of positive length")
	}
	if o.Stop != "kill" && o.Stop != "term" {
		return fmt.Errorf("-stop %q: use kill or term", o.Stop)
	}
	o.Conns, o.Size, o.Repos = lf.conns, lf.size, lf.repos
	return compare(ctx, o)
}

func cmdRun(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("lastmile-loadgen run", flag.ContinueOnError)
	var lf loadFlags
	lf.add(fs)
	url := fs.String("url", "", "the webhook endpoint, e.g. http://127.0.0.1:8080/webhook")
	secret := fs.String("secret", "", "the webhook secret (default: $"+secretEnv+")")
	duration := fs.Duration("duration", 10*time.Second, "stop after this long (0: only -requests)")
	requests := fs.Int64("requests", 0, "stop after this many requests (0: only -duration)")
	pid := fs.Int("pid", 0, "the target's process ID, to sample its resident memory (VmRSS, VmHWM)")
	timeout := fs.Duration("timeout", 30*time.Second, "per request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := lf.check(); err != nil {
		return err
	}
	if *url == "" {
		return errors.New("-url is required")
	}
	if !strings.HasPrefix(*url, "http://127.0.0.1:") && !strings.HasPrefix(*url, "http://localhost:") && !strings.HasPrefix(*url, "http://[::1]:") {
		return fmt.Errorf("-url %s: the load generator only drives a local target (127.0.0.1)", *url)
	}
	key := *secret
	if key == "" {
		key = os.Getenv(secretEnv)
	}
	if key == "" {
		return errors.New("no webhook secret: -secret or $" + secretEnv)
	}
	if *duration <= 0 && *requests <= 0 {
		return errors.New("set -duration or -requests")
	}
	if *duration <= 0 || *duration > time.Hour {
		if *requests <= 0 || *duration > time.Hour {
			return errors.New("-duration must be at most 1h")
		}
		*duration = time.Hour // a bound, whatever the count
	}
	p, err := NewPayloads(lf.size, lf.repos)
	if err != nil {
		return err
	}
	res, err := Run(ctx, LoadOptions{URL: *url, Secret: []byte(key), Payloads: p, Conns: lf.conns, Duration: *duration,
		Requests: *requests, Timeout: *timeout, PID: *pid})
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	printResult(res, p)
	return nil
}

func printResult(res *Result, p *Payloads) {
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "requests\t%d sent, %d answered 2xx in %s over %d connections (%d opened)\n", res.Sent, res.OK,
		res.Elapsed.Round(time.Millisecond), res.Conns, res.Dials)
	fmt.Fprintf(tw, "bodies\tpush deliveries of %d bytes (%d commits), %d repositories\n", p.Size, p.Commits, p.Repos)
	fmt.Fprintf(tw, "throughput\t%.0f req/s (2xx)\n", res.RPS())
	fmt.Fprintf(tw, "latency\tp50 %s  p90 %s  p99 %s  max %s\n", ms(res.Quantile(.5)), ms(res.Quantile(.9)), ms(res.Quantile(.99)), ms(res.Quantile(1)))
	fmt.Fprintf(tw, "by status\t%s\n", res.StatusSummary())
	fmt.Fprintf(tw, "machine\t%.0f%% of all CPUs busy; this load generator used %s per 2xx\n", 100*res.MachineBusy, us(res.ClientCPUPerOK()))
	if m := res.Mem; m != nil {
		if m.Samples == 0 {
			fmt.Fprintf(tw, "memory\tpid %d: %s\n", m.PID, m.ReadError)
		} else {
			fmt.Fprintf(tw, "memory\tpid %d: VmHWM %s (peak over its life), VmRSS max %s / last %s (%d samples)\n",
				m.PID, mb(m.HWM), mb(m.MaxRSS), mb(m.LastRSS), m.Samples)
			fmt.Fprintf(tw, "cpu\tpid %d: %s user+system, %s per 2xx\n", m.PID, res.CPU.Round(10*time.Millisecond), us(res.CPUPerOK()))
		}
	}
	tw.Flush()
}

func cmdBaseline(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("lastmile-loadgen baseline", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8089", "address to serve on")
	secret := fs.String("secret", "", "the webhook secret (default: $"+secretEnv+")")
	lifetime := fs.Duration("lifetime", 15*time.Minute, "stop after this long")
	parent := fs.Bool("parent", false, "stop when standard input closes (used when started by compare)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	key := *secret
	if key == "" {
		key = os.Getenv(secretEnv)
	}
	return serveBaseline(ctx, *listen, []byte(key), *lifetime, *parent)
}
