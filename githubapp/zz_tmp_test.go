package githubapp_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"testing"

	"github.com/lastmile-app/lastmile/githubapp"
)

func TestTmpWrongKey(t *testing.T) {
	w := newSimWorld(t)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	clients, _ := githubapp.NewClients(w.apiURL, w.sim.AppID(), other, &githubapp.Transport{})
	c, _ := clients.Installation(w.acme)
	_, _, _, err := c.Repositories.GetContents(context.Background(), "acme", "shop", ".github/lastmile.yml", nil)
	t.Logf("%v", err)
	clients, _ = githubapp.NewClients(w.apiURL, 99, simKey(t, w.sim), &githubapp.Transport{})
	c, _ = clients.Installation(w.acme)
	_, _, _, err = c.Repositories.GetContents(context.Background(), "acme", "shop", ".github/lastmile.yml", nil)
	t.Logf("%v", err)
	clients, _ = githubapp.NewClients("http://127.0.0.1:1/", 99, simKey(t, w.sim), &githubapp.Transport{MaxRetries: 1})
	c, _ = clients.Installation(w.acme)
	_, _, _, err = c.Repositories.GetContents(context.Background(), "acme", "shop", ".github/lastmile.yml", nil)
	t.Logf("%v", err)
}
