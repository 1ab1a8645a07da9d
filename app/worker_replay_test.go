package app_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/app"
	"github.com/lastmile-app/lastmile/githubapp"
	"github.com/lastmile-app/lastmile/pipeline"
)

// GitHub signs a delivery's body, not its X-GitHub-Delivery: a signed body
// sent again under a new delivery ID (from a proxy's log, say) is a replay.
// The worker hands it to no handler — no GitHub call, nothing done twice —
// and records it ignored, naming the delivery whose body it is, with a
// warning in the log; the first delivery's own retries are handled as
// ever, and other bodies of the repository go on.
func TestWorkerIgnoresABodyReplayedUnderANewDeliveryID(t *testing.T) {
	db := workerDB(t)
	push, err := os.ReadFile("../githubapp/testdata/push.json")
	if err != nil {
		t.Fatal(err)
	}
	other := bytes.Replace(push, []byte(`"forced"`), []byte(` "forced"`), 1)
	if bytes.Equal(other, push) {
		t.Fatal("no second body")
	}
	accept := func(id string, body []byte) {
		t.Helper()
		d := &pipeline.Delivery{ID: id, Event: "push", Repository: "acme/shop", Body: body, State: pipeline.DeliveryPending}
		if _, err := db.Accept(context.Background(), d, "push", githubapp.OutcomeAccepted); err != nil {
			t.Fatal(err)
		}
	}
	accept("first", push)
	accept("replay", push)
	accept("other", other)

	var mu sync.Mutex
	calls := map[string]int{}
	handler := handlerFunc(func(ctx context.Context, d *pipeline.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		calls[d.ID]++
		if d.ID == "first" && calls[d.ID] == 1 {
			return errors.New("GitHub answered 502") // retried: the same delivery, its body its own
		}
		return nil
	})
	var logs syncBuffer
	obs := make(outcomes, 10)
	startWorker(t, &app.Worker{Inbox: db, Handler: handler, Observer: obs, MaxAttempts: 3,
		Backoff: func(int) time.Duration { return time.Millisecond },
		Log:     slog.New(slog.NewJSONHandler(&logs, nil))})
	got := obs.next(t, 4, 10*time.Second)
	want := []handled{{"push", "retry"}, {"push", "done"}, {"push", "ignored"}, {"push", "done"}}
	if len(got) != len(want) {
		t.Fatalf("outcomes %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("outcomes %v, want %v (in order: one repository)", got, want)
			break
		}
	}
	mu.Lock()
	if calls["first"] != 2 || calls["replay"] != 0 || calls["other"] != 1 {
		t.Errorf("handler calls %v, want first twice, other once, the replay never", calls)
	}
	mu.Unlock()
	if d := delivery(t, db, "replay"); d.State != pipeline.DeliveryIgnored || !strings.Contains(d.Note, "the body of delivery first, sent again under another delivery ID") {
		t.Errorf("replay: %s, note %q", d.State, d.Note)
	}
	for _, id := range []string{"first", "other"} {
		if d := delivery(t, db, id); d.State != pipeline.DeliveryDone {
			t.Errorf("%s: %s", id, d.State)
		}
	}
	if !strings.Contains(logs.String(), `"msg":"delivery ignored: its body was taken up before under another delivery ID (a replay of a signed body)"`) ||
		!strings.Contains(logs.String(), `"first":"first"`) {
		t.Errorf("no warning of the replay in the log:\n%s", logs.String())
	}
}
