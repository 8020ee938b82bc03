package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mcpgw/mcpgw/pkg/config"
	"github.com/mcpgw/mcpgw/pkg/gateway"
	"github.com/mcpgw/mcpgw/pkg/ops/webconfig"
)

// cmdReload checks a configuration file, then asks the gateway running
// with it to reload, through its metrics listener (metrics.listen in the
// file), and prints what the reload applied. A file that does not pass
// the check is not sent for: the running gateway is left alone.
func cmdReload(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.toml", "the configuration file the gateway runs with")
	timeout := fs.Duration("timeout", 30*time.Second, "how long the reload may take")
	addrFlag := fs.String("addr", "", "the gateway's metrics listener, host:port (default: metrics.listen on this box); another box's needs metrics.web_config with authentication")
	user := fs.String("web-user", "", "with metrics.web_config's basic_auth_users: the user name")
	passFile := fs.String("web-password-file", "", "with -web-user: a file holding the password")
	caFile := fs.String("web-ca", "", "with metrics.web_config's TLS: the CA (PEM) the listener's certificate chains to (default: the system's)")
	certFile := fs.String("web-cert", "", "with metrics.web_config's client certificates: this client's certificate (PEM)")
	keyFile := fs.String("web-key", "", "with -web-cert: its key (PEM)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return fmt.Errorf("%w (the running gateway was not asked to reload)", err)
	}
	if cfg.Metrics.Listen == "" {
		return fmt.Errorf("%s: metrics.listen is empty: mcpgw reload reaches the gateway through its metrics listener; set it (and restart), or send the gateway SIGHUP (systemctl reload mcpgw)", *path)
	}
	addr := *addrFlag
	if addr == "" {
		if addr, err = loopbackAddr(cfg.Metrics.Listen); err != nil {
			return fmt.Errorf("%s: metrics.listen: %w", *path, err)
		}
	}
	client := &http.Client{Timeout: *timeout}
	scheme := "http"
	var sum webconfig.Summary
	if wc := cfg.Metrics.WebConfig; wc != "" {
		if sum, err = webconfig.Read(wc); err != nil {
			return fmt.Errorf("%s: metrics.web_config: %w", *path, err)
		}
		if sum.TLS {
			scheme = "https"
			tc, err := gateway.ClientTLS(*caFile, *certFile, *keyFile, "-web-ca", "-web-cert, -web-key")
			if err != nil {
				return err
			}
			client.Transport = &http.Transport{TLSClientConfig: tc}
		}
		if sum.ClientCerts && *certFile == "" {
			return fmt.Errorf("%s: metrics.web_config asks for a client certificate: give -web-cert and -web-key", wc)
		}
		if sum.Users() && *user == "" && *certFile == "" {
			return fmt.Errorf("%s: metrics.web_config asks for basic auth: give -web-user and -web-password-file", wc)
		}
	}
	req, err := http.NewRequest(http.MethodPost, scheme+"://"+addr+gateway.ReloadPath, nil)
	if err != nil {
		return err
	}
	req.Header.Set(gateway.ReloadHeader, "1")
	if *user != "" {
		pw, err := os.ReadFile(*passFile)
		if err != nil {
			return fmt.Errorf("-web-password-file: %w", err)
		}
		req.SetBasicAuth(*user, strings.TrimRight(string(pw), "\r\n"))
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("no gateway answered on %s (metrics.listen): %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusUnprocessableEntity {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("%s: %s: %s", addr, resp.Status, strings.TrimSpace(string(body)))
	}
	var res gateway.ReloadResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return fmt.Errorf("%s: the answer is not a reload result: %w", addr, err)
	}
	if abs, err := filepath.Abs(*path); err == nil && res.Config != abs {
		fmt.Fprintf(stderr, "mcpgw reload: note: the gateway on %s runs with %s, not %s\n", addr, res.Config, abs)
	}
	if res.Error != "" {
		return fmt.Errorf("the gateway refused %s, its running configuration stays: %s", res.Config, res.Error)
	}
	fmt.Fprintf(stdout, "%s: reloaded: %s\n", res.Config, strings.Join(res.Applied, ", "))
	if len(res.NeedRestart) > 0 {
		fmt.Fprintf(stdout, "changed in the file, applied at the next restart: %s\n", strings.Join(res.NeedRestart, ", "))
	}
	return nil
}

// loopbackAddr is where to reach a listener on this box: its own address,
// or loopback where it listens on every address.
func loopbackAddr(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", err
	}
	if ip, err := netip.ParseAddr(host); host == "" || err == nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if err == nil && ip.Is6() {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port), nil
}
