package storage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// A release stopped for an invalid configuration has no stages: the
// history says so with [], as for any other release, not null.
func TestHistoryOfAConfigErrorHasNoStages(t *testing.T) {
	ctx := context.Background()
	l := newCaseLedger(t)
	rel := &pipeline.Release{Repo: l.repo, SHA: fmt.Sprintf("%040d", 9), Ref: "refs/heads/main", PushedAt: time.Now(),
		State: pipeline.ReleaseStopped, StopKind: pipeline.StopConfigError, StopReason: "environments: empty list"}
	if _, err := l.db.RecordRelease(ctx, rel, nil); err != nil {
		t.Fatal(err)
	}
	list, err := l.db.History(ctx, storage.HistoryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || !strings.Contains(string(b), `"stages":[]`) {
		t.Errorf("history of a release stopped for its configuration: %s; want one release with \"stages\":[]", b)
	}
}
