package simulator

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strings"
)

// handleGetContents serves GET /repos/{owner}/{repo}/contents/{path}?ref=:
// a file's content at a branch or commit, or a directory listing.
func (s *Simulator) handleGetContents(w http.ResponseWriter, r *http.Request, a *auth) {
	const doc = docsRoot + "/repos/contents#get-repository-content"
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	rp := st.lookupRepo(r.PathValue("owner") + "/" + r.PathValue("repo"))
	ref := r.URL.Query().Get("ref")
	if ref == "" {
		ref = rp.defaultBranch
	}
	c, ok := rp.resolve(ref)
	if !ok {
		writeError(w, http.StatusNotFound, "No commit found for the ref "+ref, doc)
		return
	}
	p := strings.Trim(r.PathValue("path"), "/")
	if content, ok := c.files[p]; ok {
		if len(content) > maxContentsFile && !acceptsObject(r) {
			// "Between 1-100 MB: Only the raw or object custom media types
			// are supported."
			writeJSON(w, http.StatusForbidden, obj{
				"message": "This API returns blobs up to 1 MB in size. The requested blob is too large to fetch via the API, " +
					"but you can use the Git Data API to request blobs up to 100 MB in size.",
				"errors":            []any{obj{"resource": "Blob", "field": "data", "code": "too_large"}},
				"documentation_url": doc,
				"status":            "403",
			})
			return
		}
		writeJSON(w, http.StatusOK, st.contentJSON(rp, ref, p, "file", content, true))
		return
	}
	// A directory: list its direct children.
	prefix := p + "/"
	if p == "" {
		prefix = ""
	}
	seen := map[string]bool{}
	var entries []obj
	for fp, content := range c.files {
		if !strings.HasPrefix(fp, prefix) {
			continue
		}
		rest := strings.TrimPrefix(fp, prefix)
		name, _, isDir := strings.Cut(rest, "/")
		if seen[name] {
			continue
		}
		seen[name] = true
		if isDir {
			entries = append(entries, st.contentJSON(rp, ref, prefix+name, "dir", "", false))
		} else {
			entries = append(entries, st.contentJSON(rp, ref, fp, "file", content, false))
		}
	}
	if len(entries) == 0 {
		writeError(w, http.StatusNotFound, "Not Found", doc)
		return
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i]["path"].(string) < entries[j]["path"].(string) })
	writeJSON(w, http.StatusOK, entries)
}

// contentJSON renders a content object; withContent adds the base64 content
// (GitHub wraps it at 60 characters).
func (st *state) contentJSON(rp *repo, ref, p, typ, content string, withContent bool) obj {
	api := st.repoAPI(rp)
	escaped := (&url.URL{Path: p}).EscapedPath()
	self := api + "/contents/" + escaped + "?ref=" + url.QueryEscape(ref)
	sha := blobSHA(content)
	git := api + "/git/blobs/" + sha
	html := st.repoHTML(rp) + "/blob/" + ref + "/" + escaped
	download := any("https://raw.githubusercontent.com/" + rp.fullName() + "/" + ref + "/" + escaped)
	size := len(content)
	if typ == "dir" {
		sha = treeSHA(map[string]string{p: ""})
		git = api + "/git/trees/" + sha
		html = st.repoHTML(rp) + "/tree/" + ref + "/" + escaped
		download = nil
		size = 0
	}
	o := obj{
		"type":         typ,
		"size":         size,
		"name":         path.Base(p),
		"path":         p,
		"sha":          sha,
		"url":          self,
		"git_url":      git,
		"html_url":     html,
		"download_url": download,
		"_links":       obj{"self": self, "git": git, "html": html},
	}
	switch {
	case withContent && len(content) > maxContentsFile:
		// Only asked with the object media type: "Between 1-100 MB: … when
		// using the object media type, the content field will be an empty
		// string and the encoding field will be "none"."
		o["encoding"] = "none"
		o["content"] = ""
	case withContent:
		o["encoding"] = "base64"
		o["content"] = wrap60(base64.StdEncoding.EncodeToString([]byte(content)))
	}
	return o
}

// acceptsObject reports whether the request asks for the object custom media
// type (application/vnd.github.object, optionally versioned or +json).
func acceptsObject(r *http.Request) bool {
	for _, mt := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, _ = strings.Cut(mt, ";")
		mt = strings.ToLower(strings.TrimSpace(mt))
		mt = strings.TrimSuffix(mt, "+json")
		if mt == "application/vnd.github.object" || mt == "application/vnd.github.v3.object" {
			return true
		}
	}
	return false
}

func wrap60(s string) string {
	var b strings.Builder
	for len(s) > 60 {
		b.WriteString(s[:60])
		b.WriteByte('\n')
		s = s[60:]
	}
	b.WriteString(s)
	b.WriteByte('\n')
	return b.String()
}

// FileAt returns a file's content at a ref, for assertions.
func (s *Simulator) FileAt(repo, ref, path string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.mustRepo(repo).resolve(ref)
	if !ok {
		return "", false
	}
	content, ok := c.files[path]
	return content, ok
}

// maxContentsFile is the largest file the contents API returns the content
// of (1 MB).
const maxContentsFile = 1 << 20
