package simulator

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"time"
)

// zeroSHA is the "no commit" value GitHub uses in push events.
const zeroSHA = "0000000000000000000000000000000000000000"

// Author is a commit's author. Login, when set, links the commit to that
// GitHub user (commit.author in REST, username in push events).
type Author struct {
	Name  string
	Email string
	Login string
}

// CommitSpec describes one commit to create with Push.
type CommitSpec struct {
	Message string
	Author  Author
	// Time is the author and committer date. Default: the Simulator's clock.
	Time time.Time
	// Files are changes relative to the parent: path -> new content. An
	// empty string deletes the file.
	Files map[string]string
}

// PushResult tells what a push did.
type PushResult struct {
	Before  string   // previous head (zeroSHA for a new branch)
	After   string   // new head
	Commits []string // SHAs of the created commits, oldest first
}

// gitHash computes a git object id: sha1("<kind> <len>\0<body>").
func gitHash(kind string, body []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "%s %d\x00", kind, len(body))
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

func blobSHA(content string) string { return gitHash("blob", []byte(content)) }

// treeSHA hashes a flat listing of the tree. It is not git's recursive tree
// format, but it is stable and changes exactly when the contents do.
func treeSHA(files map[string]string) string {
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var b strings.Builder
	for _, p := range paths {
		fmt.Fprintf(&b, "100644 %s\x00%s\n", p, blobSHA(files[p]))
	}
	return gitHash("tree", []byte(b.String()))
}

// newCommit creates a commit on top of parents (the first parent's tree plus
// changes) and stores it in r.
func (st *state) newCommit(r *repo, parents []string, spec CommitSpec) *commit {
	files := map[string]string{}
	if len(parents) > 0 {
		for p, c := range r.commits[parents[0]].files {
			files[p] = c
		}
	}
	for p, c := range spec.Files {
		p = strings.TrimPrefix(p, "/")
		if c == "" {
			delete(files, p)
		} else {
			files[p] = c
		}
	}
	when := spec.Time
	if when.IsZero() {
		when = st.s.clock()
	}
	when = when.UTC().Truncate(time.Second)
	author := spec.Author
	if author.Name == "" {
		author.Name = "Mona Lisa Octocat"
	}
	if author.Email == "" {
		author.Email = "mona@example.com"
	}
	msg := spec.Message
	if msg == "" {
		msg = "Update files"
	}
	person := gitPerson{name: author.Name, email: author.Email, login: author.Login, date: when}
	c := &commit{
		treeSHA:   treeSHA(files),
		parents:   parents,
		message:   msg,
		author:    person,
		committer: person,
		files:     files,
		seq:       st.id(),
	}
	var body strings.Builder
	fmt.Fprintf(&body, "tree %s\n", c.treeSHA)
	for _, p := range parents {
		fmt.Fprintf(&body, "parent %s\n", p)
	}
	fmt.Fprintf(&body, "author %s <%s> %d +0000\ncommitter %s <%s> %d +0000\n\n%s\n",
		person.name, person.email, when.Unix(), person.name, person.email, when.Unix(), msg)
	// The sequence number keeps two identical commits apart, as distinct
	// wall-clock times would in real git.
	fmt.Fprintf(&body, "\nsimulator-seq: %d\n", c.seq)
	c.sha = gitHash("commit", []byte(body.String()))
	r.commits[c.sha] = c
	return c
}

// resolve finds the commit a ref names: a branch, a full SHA, or an
// unambiguous SHA prefix of at least 7 characters. It also accepts
// "refs/heads/<branch>" and "heads/<branch>", the form GitHub's commit
// endpoints document; like git, it reads "heads/x" as branch x before a
// branch named "heads/x". The simulator has no tags, so no "tags/<tag>".
func (r *repo) resolve(ref string) (*commit, bool) {
	if name, ok := strings.CutPrefix(ref, "refs/heads/"); ok {
		ref = name
	} else if name, ok := strings.CutPrefix(ref, "heads/"); ok {
		if sha, ok := r.branches[name]; ok {
			return r.commits[sha], true
		}
	}
	if sha, ok := r.branches[ref]; ok {
		return r.commits[sha], true
	}
	if c, ok := r.commits[strings.ToLower(ref)]; ok {
		return c, true
	}
	if len(ref) >= 7 && len(ref) < 40 && isHex(ref) {
		var found *commit
		for sha, c := range r.commits {
			if strings.HasPrefix(sha, strings.ToLower(ref)) {
				if found != nil {
					return nil, false
				}
				found = c
			}
		}
		return found, found != nil
	}
	return nil, false
}

func isHex(s string) bool {
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return s != ""
}

// ancestors returns every commit reachable from sha, sha included.
func (r *repo) ancestors(sha string) map[string]bool {
	seen := map[string]bool{}
	stack := []string{sha}
	for len(stack) > 0 {
		s := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[s] || r.commits[s] == nil {
			continue
		}
		seen[s] = true
		stack = append(stack, r.commits[s].parents...)
	}
	return seen
}

// between returns the commits reachable from head but not from base, oldest
// first (the order of `git log --reverse base..head`).
func (r *repo) between(base, head string) []*commit {
	exclude := map[string]bool{}
	if base != "" {
		exclude = r.ancestors(base)
	}
	var out []*commit
	for sha := range r.ancestors(head) {
		if !exclude[sha] {
			out = append(out, r.commits[sha])
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

// mergeBase returns the newest common ancestor of a and b, or nil.
func (r *repo) mergeBase(a, b string) *commit {
	inA := r.ancestors(a)
	var best *commit
	for sha := range r.ancestors(b) {
		if inA[sha] && (best == nil || r.commits[sha].seq > best.seq) {
			best = r.commits[sha]
		}
	}
	return best
}

// fileChange is one file's change between two trees.
type fileChange struct {
	path, status string // added, removed, modified
	oldContent   string
	newContent   string
}

func diffTrees(old, new map[string]string) []fileChange {
	var out []fileChange
	for p, c := range new {
		if o, ok := old[p]; !ok {
			out = append(out, fileChange{path: p, status: "added", newContent: c})
		} else if o != c {
			out = append(out, fileChange{path: p, status: "modified", oldContent: o, newContent: c})
		}
	}
	for p, o := range old {
		if _, ok := new[p]; !ok {
			out = append(out, fileChange{path: p, status: "removed", oldContent: o})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out
}

func (r *repo) parentFiles(c *commit) map[string]string {
	if len(c.parents) == 0 {
		return map[string]string{}
	}
	return r.commits[c.parents[0]].files
}

func lineCount(s string) int {
	if s == "" {
		return 0
	}
	n := strings.Count(s, "\n")
	if !strings.HasSuffix(s, "\n") {
		n++
	}
	return n
}
