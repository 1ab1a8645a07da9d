package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/lastmile-app/lastmile/app"
)

// cmdProfile runs lastmile in this process (app.New + Run, exactly what
// `lastmile serve` runs) with the GitHub stub, drives it, and writes pprof
// profiles. The load generator's goroutines carry the label role=loadgen
// and the stub's role=stub, so lastmile's own share can be isolated:
//
//	go tool pprof -tagignore role=loadgen -tagignore role=stub cpu.pprof
func cmdProfile(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("lastmile-loadgen profile", flag.ContinueOnError)
	var lf loadFlags
	lf.add(fs)
	duration := fs.Duration("duration", 20*time.Second, "profiled load")
	warmup := fs.Duration("warmup", 3*time.Second, "unprofiled load first")
	dir := fs.String("out", ".", "directory for cpu.pprof, heap.pprof, mutex.pprof, block.pprof")
	logLevel := fs.String("log-level", "info", "lastmile's log level")
	ghLatency := fs.Duration("github-latency", 0, "delay of the GitHub stub's answers")
	keep := fs.Bool("keep", false, "keep the temporary directory (database, log)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := lf.check(); err != nil {
		return err
	}
	if *duration <= 0 || *duration > 10*time.Minute {
		return errors.New("-duration: use (0, 10m]")
	}
	ctx, cancel := context.WithTimeout(ctx, *duration+*warmup+5*time.Minute)
	defer cancel()
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "lastmile-profile-")
	if err != nil {
		return err
	}
	if *keep {
		fmt.Println("keeping", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}

	payloads, err := NewPayloads(lf.size, lf.repos)
	if err != nil {
		return err
	}
	secretRaw := make([]byte, 20)
	_, _ = rand.Read(secretRaw)
	secret := hex.EncodeToString(secretRaw)
	var stub *githubStub
	pprof.Do(ctx, pprof.Labels("role", "stub"), func(context.Context) { stub, err = startGitHubStub(*ghLatency) })
	if err != nil {
		return err
	}
	defer stub.Close()

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	env := map[string]string{
		"LASTMILE_DATABASE":            filepath.Join(tmp, "lastmile.db"),
		"LASTMILE_WEBHOOK_SECRET":      secret,
		"LASTMILE_APP_ID":              "4242",
		"LASTMILE_PRIVATE_KEY":         string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})),
		"LASTMILE_GITHUB_URL":          stub.URL(),
		"LASTMILE_REDELIVERY_INTERVAL": "0",
		"LASTMILE_LOG_LEVEL":           *logLevel,
		"LASTMILE_LISTEN":              "127.0.0.1:0",
	}
	cfg, err := app.LoadConfig(nil, func(k string) string { return env[k] }, os.Stderr)
	if err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(tmp, "lastmile.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	lg := slog.New(slog.NewJSONHandler(logf, &slog.HandlerOptions{Level: cfg.LogLevel}))
	a, err := app.New(ctx, cfg, app.Options{Logger: lg, Listener: ln})
	if err != nil {
		return err
	}
	runCtx, stopApp := context.WithCancel(context.WithoutCancel(ctx))
	appDone := make(chan error, 1)
	go func() { appDone <- a.Run(runCtx) }()
	defer func() { stopApp(); <-appDone }()
	url := "http://" + a.Addr() + "/webhook"
	for i := 0; ; i++ {
		resp, err := http.Get("http://" + a.Addr() + "/readyz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if i > 600 {
			return errors.New("lastmile not ready within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}

	load := func(d time.Duration) (res *Result, err error) {
		pprof.Do(ctx, pprof.Labels("role", "loadgen"), func(ctx context.Context) {
			res, err = Run(ctx, LoadOptions{URL: url, Secret: []byte(secret), Payloads: payloads, Conns: lf.conns,
				Duration: d, Timeout: 30 * time.Second, PID: os.Getpid()})
		})
		return res, err
	}
	if *warmup > 0 {
		if _, err := load(*warmup); err != nil {
			return err
		}
	}
	runtime.SetMutexProfileFraction(10)
	runtime.SetBlockProfileRate(int(100 * time.Microsecond))
	cpuf, err := os.Create(filepath.Join(*dir, "cpu.pprof"))
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(cpuf); err != nil {
		return err
	}
	handled0 := stub.contents.Load()
	res, err := load(*duration)
	handled := stub.contents.Load() - handled0
	pprof.StopCPUProfile()
	cpuf.Close()
	if err != nil {
		return err
	}
	for _, name := range []string{"heap", "mutex", "block"} {
		f, err := os.Create(filepath.Join(*dir, name+".pprof"))
		if err != nil {
			return err
		}
		_ = pprof.Lookup(name).WriteTo(f, 0)
		f.Close()
	}
	runtime.SetMutexProfileFraction(0)
	runtime.SetBlockProfileRate(0)
	printResult(res, payloads)
	fmt.Printf("worker\t%d deliveries handled while profiled (%.0f/s)\n", handled, float64(handled)/res.Elapsed.Seconds())
	fmt.Printf("\nprofiles in %s (memory above is this whole process: lastmile + load generator)\n", *dir)
	fmt.Printf("  go tool pprof -top -tagignore role=loadgen -tagignore role=stub %s\n", filepath.Join(*dir, "cpu.pprof"))
	return nil
}
