//go:build !windows

package gateway_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/pkg/gateway"
	"github.com/mcpgw/mcpgw/pkg/tools/sim"
)

// The web side locked by metrics.web_config (exporter-toolkit): the
// certificates made by the openssl command line, the password hashed by
// Python's bcrypt, and the clients curl, promtool, Prometheus itself and
// Chromium as well as Go's.

const webPassword = "s3cret horse"

// webPKI makes a CA, the listener's certificate for 127.0.0.1 and a
// client certificate, and returns them with a bcrypt hash of
// webPassword.
func webPKI(t *testing.T) (*pki, string) {
	t.Helper()
	need(t, "openssl", "/usr/bin/python3")
	p := &pki{t: t, dir: t.TempDir()}
	p.ca("webca")
	p.leaf("web", "webca", "2", "subjectAltName = IP:127.0.0.1", "extendedKeyUsage = serverAuth")
	p.leaf("scraper", "webca", "2", "extendedKeyUsage = clientAuth")
	out, err := exec.Command("/usr/bin/python3", "-c",
		"import bcrypt, sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(rounds=10)).decode())", webPassword).Output()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("python3-bcrypt: %v: .ci/run must install it", err)
		}
		t.Skipf("python3-bcrypt is not installed: %v", err)
	}
	return p, strings.TrimSpace(string(out))
}

// writeWebConfig writes the web configuration file (again: it is read
// on every request).
func writeWebConfig(t *testing.T, path string, p *pki, hash, clientAuth string) {
	t.Helper()
	yml := fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n  client_ca_file: %s\n  client_auth_type: %s\nbasic_auth_users:\n  alice: %s\n",
		p.path("web", "crt"), p.path("web", "key"), p.path("webca", "crt"), clientAuth, hash)
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
}

func webClient(t *testing.T, p *pki, withCert bool) *http.Client {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(readFile(t, p.path("webca", "crt")))
	tc := &tls.Config{RootCAs: roots}
	if withCert {
		cert, err := tls.LoadX509KeyPair(p.path("scraper", "crt"), p.path("scraper", "key"))
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// webGet makes a request and returns its status, or an error.
func webGet(c *http.Client, method, url, user, password string) (int, string, error) {
	req, _ := http.NewRequest(method, url, nil)
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	req.Header.Set(gateway.ReloadHeader, "1")
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	io.Copy(&b, io.LimitReader(resp.Body, 1<<20)) // /events streams: its first bytes suffice
	return resp.StatusCode, b.String(), nil
}

// TestWebConfig: with metrics.web_config every path on the metrics
// listener answers 401 without credentials and works with them, over
// HTTPS only; curl, promtool and a real Prometheus scrape it; the file is
// read again without a restart (a client certificate then required).
func TestWebConfig(t *testing.T) {
	p, hash := webPKI(t)
	wc := filepath.Join(t.TempDir(), "web.yml")
	writeWebConfig(t, wc, p, hash, "VerifyClientCertIfGiven")
	r := startRig(t, sim.Faults{}, metricsOn+fmt.Sprintf("web_config = %q\npprof = true\n", wc))
	addr := r.svc.MetricsAddr.String()
	base := "https://" + addr
	c := webClient(t, p, false)

	paths := []struct{ method, path string }{
		{"GET", "/"}, {"GET", "/events"}, {"GET", "/metrics"}, {"GET", "/healthz"}, {"GET", "/readyz"},
		{"GET", "/debug/pprof/"}, {"GET", "/debug/pprof/goroutine?debug=1"}, {"POST", gateway.ReloadPath}, {"GET", "/nothing-here"},
	}
	for _, pt := range paths {
		if code, _, err := webGet(c, pt.method, base+pt.path, "", ""); err != nil || code != http.StatusUnauthorized {
			t.Errorf("%s %s without credentials: %d %v, want 401", pt.method, pt.path, code, err)
		}
		if code, _, err := webGet(c, pt.method, base+pt.path, "alice", "wrong"); err != nil || code != http.StatusUnauthorized {
			t.Errorf("%s %s with a wrong password: %d %v, want 401", pt.method, pt.path, code, err)
		}
	}
	for _, pt := range paths[:7] {
		if pt.path == "/events" {
			continue // a stream: the browser below reads it
		}
		if code, body, err := webGet(c, pt.method, base+pt.path, "alice", webPassword); err != nil || code != http.StatusOK {
			t.Errorf("%s %s with credentials: %d %v %.200s", pt.method, pt.path, code, err, body)
		}
	}
	if code, _, err := webGet(c, "GET", "http://"+addr+"/metrics", "alice", webPassword); err == nil && code == http.StatusOK {
		t.Error("plain HTTP served the metrics behind a TLS web_config")
	}

	// curl and promtool, independent of Go's HTTP and TLS.
	need(t, "curl", "promtool")
	scrape := exec.Command("curl", "-sS", "--fail", "--cacert", p.path("webca", "crt"), "-u", "alice:"+webPassword, base+"/metrics")
	body, err := scrape.Output()
	if err != nil {
		t.Fatalf("curl over HTTPS with basic auth: %v", err)
	}
	check := exec.Command("promtool", "check", "metrics")
	check.Stdin = bytes.NewReader(body)
	if out, err := check.CombinedOutput(); err != nil && !strings.Contains(string(out), "counter metrics should have") {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
	if out, err := exec.Command("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", p.path("webca", "crt"), base+"/metrics").Output(); err != nil || string(out) != "401" {
		t.Errorf("curl without credentials: %s %v, want 401", out, err)
	}

	// Prometheus scrapes it, with the credentials; without, the target is down.
	prometheusScrapes(t, p, addr)

	// The file is read again: a client certificate is now required.
	writeWebConfig(t, wc, p, hash, "RequireAndVerifyClientCert")
	if _, _, err := webGet(c, "GET", base+"/healthz", "alice", webPassword); err == nil {
		t.Fatal("no client certificate, yet served after the file asked for one")
	}
	if code, _, err := webGet(webClient(t, p, true), "GET", base+"/healthz", "alice", webPassword); err != nil || code != http.StatusOK {
		t.Fatalf("with a client certificate and credentials: %d %v", code, err)
	}
}

// prometheusScrapes runs Prometheus with two jobs on the listener: one
// with the CA and the credentials (up), one without credentials (down,
// 401).
func prometheusScrapes(t *testing.T, p *pki, addr string) {
	t.Helper()
	need(t, "prometheus")
	dir := t.TempDir()
	pw := filepath.Join(dir, "password")
	os.WriteFile(pw, []byte(webPassword), 0o600)
	conf := filepath.Join(dir, "prometheus.yml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
  - job_name: with
    scheme: https
    basic_auth: {username: alice, password_file: %s}
    tls_config: {ca_file: %s}
    static_configs: [{targets: [%q]}]
  - job_name: without
    scheme: https
    tls_config: {ca_file: %s}
    static_configs: [{targets: [%q]}]
`, pw, p.path("webca", "crt"), addr, p.path("webca", "crt"), addr)), 0o600)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	web := l.Addr().String()
	l.Close()
	prom := exec.Command("prometheus", "--config.file="+conf, "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+web)
	var log bytes.Buffer
	prom.Stderr = &log
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { prom.Process.Kill(); prom.Wait() }()
	type target struct {
		Labels    map[string]string `json:"labels"`
		Health    string            `json:"health"`
		LastError string            `json:"lastError"`
	}
	var got map[string]target
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		resp, err := http.Get("http://" + web + "/api/v1/targets")
		if err != nil {
			continue
		}
		var res struct {
			Data struct {
				ActiveTargets []target `json:"activeTargets"`
			} `json:"data"`
		}
		json.NewDecoder(resp.Body).Decode(&res)
		resp.Body.Close()
		got = map[string]target{}
		for _, tg := range res.Data.ActiveTargets {
			got[tg.Labels["job"]] = tg
		}
		if got["with"].Health == "up" && got["without"].Health == "down" {
			if !strings.Contains(got["without"].LastError, "401") {
				t.Errorf("the job without credentials is down, but not for a 401: %s", got["without"].LastError)
			}
			return
		}
	}
	t.Fatalf("Prometheus's targets: %+v\n%s", got, log.String())
}

// TestWebConfigInABrowser: the status page and its live feed over HTTPS
// with basic auth, in Chromium.
func TestWebConfigInABrowser(t *testing.T) {
	p, hash := webPKI(t)
	wc := filepath.Join(t.TempDir(), "web.yml")
	writeWebConfig(t, wc, p, hash, "VerifyClientCertIfGiven")
	r := startRig(t, sim.Faults{}, metricsOn+fmt.Sprintf("web_config = %q\n", wc))
	b := openPage(t)
	b.call("Security.setIgnoreCertificateErrors", map[string]any{"ignore": true}) // a test CA the browser does not know
	b.call("Network.enable", nil)
	b.call("Network.setExtraHTTPHeaders", map[string]any{"headers": map[string]string{
		"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:"+webPassword))}})
	url := "https://" + r.svc.MetricsAddr.String() + "/"
	b.eval(fmt.Sprintf("location.assign(%q)", url))
	if got := b.waitFor(`location.href + " " + document.readyState`, fmt.Sprintf("%q", url+" complete")); got != fmt.Sprintf("%q", url+" complete") {
		t.Fatalf("the page did not load: %s", got)
	}
	if got := b.waitFor(`(document.querySelector('#lines .line[data-line="l1"] .state') || {}).textContent`, `"up"`); got != `"up"` {
		t.Fatalf("line l1's state: %s (the page: %s)", got, b.eval(`document.body.innerText.slice(0, 300)`))
	}
	c := dial(t, r.addr)
	exchange(t, c, 9, 3, []byte{0x03, 0, 0, 0, 1})
	lines := transactions(t, r.log.String())
	want := fmt.Sprintf("%q", lines[len(lines)-1]["trace"].(string))
	if got := b.waitFor(`(document.querySelector('#tx tr.new td:nth-child(2)') || {}).textContent`, want); got != want {
		t.Fatalf("the live row over HTTPS: %s, want %s (the transaction's trace)", got, want)
	}
}
