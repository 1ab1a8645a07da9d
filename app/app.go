// Package app is lastmile's composition root: it wires the configuration,
// the SQLite store, the GitHub clients, the pipeline engine and the worker
// together, serves HTTP (the webhook, health, metrics and the read API) and
// runs the process's lifecycle, so that the binary, the demo and tests can
// run lastmile in-process.
package app

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/lastmile-app/lastmile/githubapp"
	"github.com/lastmile-app/lastmile/metrics"
	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// Version is set at build time (-ldflags "-X .../app.Version=v1.2.3").
var Version = "dev"

// Options are the parts a caller may provide instead of the defaults.
type Options struct {
	Logger *slog.Logger
	// GitHubTransport is the base transport for GitHub calls (default: a
	// clone of http.DefaultTransport).
	GitHubTransport http.RoundTripper
	// Listener, if set, is used instead of listening on Config.Listen.
	Listener net.Listener
	// Backoff, if set, replaces the worker's wait between attempts.
	Backoff func(attempt int) time.Duration
}

// App is a running lastmile.
type App struct {
	cfg      *Config
	log      *slog.Logger
	db       *storage.DB
	metrics  *metrics.Metrics
	clients  *githubapp.Clients
	engine   *pipeline.Engine
	worker   *Worker
	http     *http.Server
	listener net.Listener
	conns    *connLimit // listener, at most maxWebhookConns connections open
	// admin serves /metrics and /api on their own address
	// (Config.AdminListen), when there is one; otherwise http serves them.
	admin         *http.Server
	adminListener net.Listener
	unlock        func(keep bool) // releases the database lock
	vacuumHinted  bool            // the sweep said once that the database does not shrink
}

// New binds the listeners, opens the database (applying migrations) and
// builds the GitHub clients. Run starts the work.
func New(ctx context.Context, cfg *Config, opts Options) (*App, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = slog.New(contextAttrs{log.Handler()})
	// The addresses first: a start that cannot listen (a port in use)
	// leaves no database behind, new or migrated.
	listener, adminListener, err := listen(cfg, opts.Listener)
	if err != nil {
		return nil, err
	}
	closeListeners := func() {
		listener.Close()
		if adminListener != nil {
			adminListener.Close()
		}
	}
	unlock, err := lockDatabase(cfg.Database)
	if err != nil {
		closeListeners()
		return nil, err
	}
	// Until New returns, /healthz answers and the rest 503: the database's
	// migrations may take minutes after an upgrade.
	defer serveStarting(log, listener, adminListener)()
	db, err := storage.OpenLogged(ctx, cfg.Database, log)
	if err != nil {
		unlock(false)
		closeListeners()
		return nil, err
	}
	m := metrics.New(db, db, Version, log)
	m.StartAtZero(metrics.WebhookDeliveries, githubapp.WebhookSeries())
	m.StartAtZero(metrics.GitHubRequests, githubapp.RequestSeries())
	transport := &githubapp.Transport{Base: opts.GitHubTransport, Observer: m}
	clients, err := githubapp.NewClients(cfg.GitHubURL, cfg.AppID, cfg.Key, transport)
	if err != nil {
		db.Close()
		unlock(true)
		closeListeners()
		return nil, err
	}
	engine := &pipeline.Engine{
		Store:             db,
		GitHub:            &githubapp.GitHub{Clients: clients},
		Log:               log,
		Now:               time.Now,
		DeployLogMaxBytes: cfg.DeployLogMaxBytes,
	}
	var _ githubapp.Reacher = engine // the Router hands events of moved repositories their installation
	worker := &Worker{
		Inbox:          db,
		Handler:        &githubapp.Router{Engine: engine, Forget: clients.Forget},
		Installations:  db,
		Observer:       m,
		Log:            log,
		Concurrency:    cfg.Workers,
		MaxAttempts:    cfg.MaxAttempts,
		Backoff:        opts.Backoff,
		UnreachableFor: cfg.unreachableFor,
	}
	a := &App{cfg: cfg, log: log, db: db, metrics: m, clients: clients, engine: engine, worker: worker, unlock: unlock}
	a.listener, a.adminListener = listener, adminListener
	a.conns = newConnLimit(listener, maxWebhookConns, maxConnsPerClient)
	a.conns.refused = (&connsRefusedLog{log: log, now: time.Now, limit: maxConnsPerClient}).refused
	if cfg.AdminListen != "" {
		a.http = a.server(a.routes(true, false))
		a.admin = a.server(a.routes(false, true))
	} else {
		a.http = a.server(a.routes(true, true))
	}
	return a, nil
}

// listen binds the webhook's address (unless given a listener) and the
// admin address, if any.
func listen(cfg *Config, given net.Listener) (listener, admin net.Listener, err error) {
	listener = given
	if listener == nil {
		if listener, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
		}
	}
	if cfg.AdminListen != "" {
		if admin, err = net.Listen("tcp", cfg.AdminListen); err != nil {
			listener.Close()
			return nil, nil, fmt.Errorf("listen on %s (LASTMILE_ADMIN_LISTEN): %w", cfg.AdminListen, err)
		}
	}
	return listener, admin, nil
}

func (a *App) server(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    maxHeaderBytes,
		// GitHub gives up on a delivery after 10 s: a request that takes
		// longer is not GitHub's, and must not hold a connection and
		// memory for long.
		ReadTimeout:  15 * time.Second,
		WriteTimeout: 2 * time.Minute,
		IdleTimeout:  2 * time.Minute,
		ErrorLog:     slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
}

// Addr is the address the HTTP server listens on.
func (a *App) Addr() string { return a.listener.Addr().String() }

// AdminAddr is the address serving /metrics and /api when
// Config.AdminListen is set, and "" otherwise.
func (a *App) AdminAddr() string {
	if a.adminListener == nil {
		return ""
	}
	return a.adminListener.Addr().String()
}

// DB is the store (for the demo and tests).
func (a *App) DB() *storage.DB { return a.db }

// routes is what one address serves: the webhook, the admin endpoints
// (/metrics and the read API), or both; health on each.
func (a *App) routes(webhook, admin bool) http.Handler {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Use(middleware.Recover())
	if webhook {
		hook := githubapp.NewWebhook(a.cfg.WebhookSecret.Reveal(), a.db, githubapp.Handles, a.metrics, a.worker.Notify, a.log)
		e.POST("/webhook", echo.WrapHandler(hook))
	}
	// GET and HEAD alike: a load balancer's or a monitor's probe may ask
	// with either.
	getOrHead := []string{http.MethodGet, http.MethodHead}
	e.Match(getOrHead, "/healthz", func(c echo.Context) error { return c.String(http.StatusOK, "ok\n") })
	e.Match(getOrHead, "/readyz", func(c echo.Context) error {
		// Each check bounded on its own: a probe that hangs (the read pool
		// busy with slow queries) is no answer for the orchestrator
		// asking, and a slow ping is not the write probe's failure.
		ping, cancelPing := context.WithTimeout(c.Request().Context(), 2*time.Second)
		defer cancelPing()
		if err := a.db.Ping(ping); err != nil {
			a.log.Warn("readyz: database", "error", err) // details in the log, not to the internet
			return c.String(http.StatusServiceUnavailable, "database unavailable\n")
		}
		ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
		defer cancel()
		if err := a.db.Writable(ctx); err != nil {
			a.log.Warn("readyz: the inbox cannot store deliveries", "error", err)
			return c.String(http.StatusServiceUnavailable, "the inbox cannot store deliveries\n")
		}
		if !a.worker.Alive() {
			return c.String(http.StatusServiceUnavailable, "worker not running\n")
		}
		return c.String(http.StatusOK, "ready\n")
	})
	if admin {
		e.Match(getOrHead, "/metrics", echo.WrapHandler(a.metrics.Handler()))
		a.mountAPI(e)
	}
	return e
}

// warnSecretWhitespace warns of a webhook secret that starts or ends with
// whitespace. It is not refused: GitHub signs with the secret as the App's
// settings hold it, spaces and all. But it is most often a newline copied
// with it, and then every delivery is refused.
func warnSecretWhitespace(log *slog.Logger, secret Secret) {
	if s := secret.Reveal(); strings.TrimSpace(s) != s {
		log.Warn("the webhook secret (LASTMILE_WEBHOOK_SECRET) starts or ends with whitespace: if the App's settings do not, every delivery will be refused (401)")
	}
}

// sharedAddressSpace is 100.64.0.0/10 (RFC 6598: carrier-grade NAT, and
// the addresses of overlay networks such as Tailscale's), private in use
// though net.IP.IsPrivate does not count it.
var sharedAddressSpace = &net.IPNet{IP: net.IPv4(100, 64, 0, 0), Mask: net.CIDRMask(10, 32)}

// metricsExposure says, when /metrics (and the read API, when api: a
// token is set) answer on an address other machines reach, where, and what
// to do; "" otherwise. Those are the webhook's address listen (no admin
// address of their own) when it is not on the loopback interface; or the
// admin address when it is every interface (`:9797`, `0.0.0.0:9797`) or a
// public IP address — not one on the loopback interface or a private
// network, which is what it is for.
func metricsExposure(admin, listen string, api bool) string {
	what, answers, them, their := "/metrics", "answers", "it", "its"
	if api {
		what, answers, them, their = "/metrics and the read API", "answer", "them", "their"
	}
	if admin == "" {
		if loopback(listen) {
			return ""
		}
		return what + " " + answers + " on the webhook's address, reachable from other machines: /metrics names your repositories and environments to anyone who reaches it; set LASTMILE_ADMIN_LISTEN (such as 127.0.0.1:9797) to serve " + them + " on an address of " + their + " own, or let your proxy pass only /webhook"
	}
	host, _, err := net.SplitHostPort(admin)
	if err != nil || loopback(admin) {
		return ""
	}
	ip := net.ParseIP(host)
	switch {
	case host == "" || ip != nil && ip.IsUnspecified():
		return what + " " + answers + " on every interface of this machine (LASTMILE_ADMIN_LISTEN): /metrics names your repositories and environments to anyone who reaches that port; give LASTMILE_ADMIN_LISTEN the address of a private interface your Prometheus reaches (or 127.0.0.1), or keep the port behind a firewall"
	case ip != nil && !ip.IsPrivate() && !ip.IsLinkLocalUnicast() && !sharedAddressSpace.Contains(ip):
		return what + " " + answers + " on a public address (LASTMILE_ADMIN_LISTEN): /metrics names your repositories and environments to anyone who reaches that port; give LASTMILE_ADMIN_LISTEN the address of a private interface your Prometheus reaches (or 127.0.0.1), or keep the port behind a firewall"
	}
	return ""
}

// Run serves and works until ctx ends, then shuts down in order: stop
// accepting deliveries, let the worker finish the deliveries in hand, flush
// the counters and close the database.
func (a *App) Run(ctx context.Context) error {
	a.log.Info("lastmile starting", "version", Version, "listen", a.Addr(), "admin_listen", a.AdminAddr(),
		"database", a.cfg.Database, "github", redactURL(a.cfg.GitHubURL), "app_id", a.cfg.AppID)
	warnSecretWhitespace(a.log, a.cfg.WebhookSecret)
	if warning := metricsExposure(a.AdminAddr(), a.Addr(), a.cfg.APIToken != ""); warning != "" {
		a.log.Warn(warning, "listen", a.Addr(), "admin_listen", a.AdminAddr())
	}
	if len(a.cfg.SecretFlags) > 0 {
		a.log.Warn("secrets given as flags can be read by other users of this machine in the process list: give them as environment variables (LASTMILE_WEBHOOK_SECRET, LASTMILE_PRIVATE_KEY_FILE, LASTMILE_API_TOKEN)",
			"flags", a.cfg.SecretFlags)
	}
	if len(a.cfg.IgnoredVariables) > 0 {
		a.log.Warn("environment variables that are no setting of lastmile serve are ignored", "variables", a.cfg.IgnoredVariables)
	}
	serveErr := make(chan error, 2)
	// At the cap of connections, the idle ones (kept alive, or opened and
	// silent for 5 s) are let go: net/http closes them when keep-alives
	// are turned off, and they are turned on again at once.
	a.conns.full = func() {
		a.http.SetKeepAlivesEnabled(false)
		a.http.SetKeepAlivesEnabled(true)
	}
	// A client at its own cap has its idle connections let go, by their
	// states.
	a.http.ConnState = a.conns.track(a.http.ConnState)
	go func() { serveErr <- a.http.Serve(a.conns) }()
	if a.admin != nil {
		go func() { serveErr <- a.admin.Serve(a.adminListener) }()
	}

	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	var bg sync.WaitGroup
	run := func(f func(context.Context)) {
		bg.Add(1)
		go func() { defer bg.Done(); f(workCtx) }()
	}
	workerDone := make(chan struct{})
	go func() { a.worker.Run(workCtx); close(workerDone) }()
	run(func(ctx context.Context) { a.metrics.RunFlusher(ctx, 10*time.Second) })
	run(func(ctx context.Context) { checkCredentials(ctx, a.clients, a.cfg.AppID, a.log) })
	run(a.sweep)
	if a.cfg.RedeliveryInterval > 0 {
		r := &githubapp.Redeliverer{App: a.clients.App(), Store: a.db, Window: a.cfg.RedeliveryWindow,
			Interval: a.cfg.RedeliveryInterval, MaxAttempts: 5, Now: time.Now, Log: a.log}
		run(r.Run)
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("HTTP server: %w", err)
	}
	a.log.Info("lastmile stopping: no new deliveries; finishing the ones in hand (another SIGTERM or Ctrl-C, a second or more after, stops it at once)")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
	defer cancel()
	// The worker starts nothing new from now on, while the HTTP server
	// answers the requests it has (a slow client must not hold the worker
	// to new work).
	stopWork()
	httpDone := make(chan struct{})
	go func() {
		defer close(httpDone)
		for _, srv := range []*http.Server{a.http, a.admin} {
			if srv == nil {
				continue
			}
			if serr := srv.Shutdown(shutdownCtx); serr != nil && !errors.Is(serr, http.ErrServerClosed) {
				a.log.Warn("HTTP shutdown", "error", serr)
			}
		}
	}()
	select {
	case <-workerDone:
	case <-shutdownCtx.Done():
		// Out of time: the deliveries in hand are cancelled (their GitHub
		// calls end, nothing more is written for them) before the database
		// closes; they are handled again at the next start.
		a.log.Warn("shutdown timeout: cancelling the deliveries in hand; they will be handled again at the next start")
		a.worker.Abort()
		select {
		case <-workerDone:
		case <-time.After(abortGrace):
			a.log.Error("a delivery in hand did not end when cancelled; closing the database under it")
		}
	}
	<-httpDone
	bg.Wait()
	// The flusher flushed when told to stop, but the worker may have called
	// GitHub since, finishing its delivery: flush once more, last.
	// Bounded: a database that does not answer must not keep the process
	// from closing it past its orchestrator's patience.
	flushCtx, cancelFlush := context.WithTimeout(context.Background(), 5*time.Second)
	if ferr := a.metrics.Flush(flushCtx); ferr != nil {
		// The counts since the last flush are lost: a stop that lost
		// something is no clean stop (exit 1).
		a.log.Error("flush counters at shutdown: the counts since the last flush are lost", "error", ferr)
		err = errors.Join(err, fmt.Errorf("flush counters at shutdown: %w", ferr))
	}
	cancelFlush()
	if cerr := a.db.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("close database: %w", cerr))
	}
	a.unlock(true)
	a.log.Info("lastmile stopped")
	return err
}

// prune drops the delivery bodies and deploy logs older than cutoff, gives
// the pages they held back to the file system, and logs what it did with
// the file's figures after. It reports whether it went to the end (if not,
// the sweep tries again a minute later).
func (a *App) prune(ctx context.Context, cutoff time.Time) bool {
	p, err := a.db.Prune(ctx, cutoff)
	attrs := []any{"delivery_bodies", p.DeliveryBodies, "job_logs", p.JobLogs, "older_than", cutoff.UTC().Format(time.RFC3339)}
	if p.Disk.PageSize > 0 {
		attrs = append(attrs, "auto_vacuum", p.Disk.AutoVacuum, "pages_reclaimed", p.PagesReclaimed,
			"page_count", p.Disk.PageCount, "freelist_count", p.Disk.FreelistCount, "page_size", p.Disk.PageSize)
	}
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("sweep: retention", append([]any{"error", err}, attrs...)...)
		}
		return false
	}
	if p.DeliveryBodies+p.JobLogs+p.PagesReclaimed == 0 {
		return true
	}
	a.log.Info("sweep: retention pruned old payloads and logs; records and metrics stay", attrs...)
	if p.Disk.AutoVacuum == "none" && !a.vacuumHinted {
		a.vacuumHinted = true
		a.log.Info("sweep: retention: this database was created without auto_vacuum, so the space pruned is reused for new data but the file does not shrink; `lastmile vacuum`, run once with lastmile serve stopped, converts it (it needs free disk of about twice the database's size)",
			"database", a.cfg.Database, "freelist_count", p.Disk.FreelistCount, "page_size", p.Disk.PageSize)
	}
	return true
}

// suspendedRecheck is how often the sweep asks GitHub about the
// installations recorded as suspended (one request each): an
// unsuspension whose delivery never came is found within it.
const suspendedRecheck = 10 * time.Minute

// abortGrace is how long a shutdown out of time waits for the cancelled
// deliveries in hand to end.
const abortGrace = 5 * time.Second

// chore runs one of the sweep's chores: run, which returns how many things
// it did, is logged as did when it did any, and as failed (a warning) when
// it fails, unless ctx has ended. It reports whether run succeeded.
func (a *App) chore(ctx context.Context, failed, did string, run func(context.Context) (int, error)) bool {
	n, err := run(ctx)
	switch {
	case err != nil && ctx.Err() == nil:
		a.log.Warn("sweep: "+failed, "error", err)
	case err == nil && n > 0:
		a.log.Info("sweep: "+did, "count", n)
	}
	return err == nil
}

// sweep runs the periodic housekeeping: releases that waited behind a
// deployment in progress for longer than pipeline.HoldRunning go on,
// releases that waited too long for their required contexts are stopped,
// protection-rule requests that waited too long for a deployment to end
// are judged again, repositories that owe GitHub work no pending delivery
// sees to are advanced, protection-rule answers GitHub did not take are
// sent again, installations recorded as suspended are looked up on GitHub
// (every suspendedRecheck), deploy job logs GitHub did not have at first
// are fetched again, and (with a retention setting) old delivery bodies
// and deploy logs are pruned.
func (a *App) sweep(ctx context.Context) {
	t := time.NewTicker(cmp.Or(a.cfg.sweepEvery, time.Minute))
	defer t.Stop()
	var lastPrune, lastRecheck time.Time
	// Holds that ended since the last look; the first look goes back to
	// the beginning (what ended while lastmile was down, however long). A
	// repository that could not be advanced is tried again at the next.
	var lookedAt time.Time
	var held []pipeline.Repo
	for {
		now := time.Now()
		if ended, err := a.db.HoldEnded(ctx, lookedAt, now); err != nil {
			if ctx.Err() != nil {
				return
			}
			a.log.Warn("sweep: deployments in progress for too long", "error", err)
		} else {
			lookedAt = now
			for _, r := range ended {
				if !slices.ContainsFunc(held, func(o pipeline.Repo) bool { return o.ID == r.ID }) {
					held = append(held, r)
				}
			}
		}
		if len(held) > 0 {
			var err error
			if held, err = a.engine.AdvanceReleased(ctx, held); err != nil {
				if ctx.Err() != nil {
					return
				}
				a.log.Warn("sweep: releases waiting behind a deployment in progress for too long; trying again in a minute", "error", err)
			}
		}
		a.chore(ctx, "expire waiting releases", "releases stopped after waiting too long for required contexts",
			func(ctx context.Context) (int, error) {
				return a.db.ExpireWaiting(ctx, time.Now().Add(-a.cfg.ContextsTimeout))
			})
		a.chore(ctx, "protection-rule requests waiting too long for a deployment to end",
			"protection-rule requests that waited too long for a deployment to end judged again", a.engine.AnswerLongWaitingProtectionRules)
		a.chore(ctx, "repositories owing GitHub work that no pending delivery sees to",
			"repositories owing GitHub work that no pending delivery saw to advanced", a.engine.AdvanceOwing)
		a.chore(ctx, "protection-rule answers GitHub did not receive",
			"protection-rule answers GitHub did not receive sent again", a.engine.AnswerUnpostedProtectionRules)
		if time.Since(lastRecheck) >= suspendedRecheck && a.chore(ctx, "installations recorded as suspended",
			"installations recorded as suspended found unsuspended on GitHub", a.engine.RecheckSuspended) {
			lastRecheck = time.Now()
		}
		a.chore(ctx, "deploy job logs GitHub did not have at first",
			"deploy job logs kept that GitHub did not have at first", a.engine.FetchMissingJobLogs)
		if ctx.Err() != nil {
			return
		}
		if a.cfg.RetentionDays > 0 && time.Since(lastPrune) > time.Hour {
			if a.prune(ctx, time.Now().AddDate(0, 0, -a.cfg.RetentionDays)) {
				lastPrune = time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
