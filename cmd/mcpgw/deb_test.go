package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDebianPackage builds the amd64 packages as make deb does and looks
// inside: the control fields, the files and conffiles, the binary runs and
// accepts the shipped config, systemd-analyze finds nothing to say about
// the unit, lintian (where installed) reports no error or warning, and
// the copyright covers every module linked into the binary.
func TestDebianPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a package")
	}
	for _, tool := range []string{"dpkg-deb", "systemd-analyze"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is not installed: .ci/run must install it", tool)
			}
			t.Skipf("%s is not installed", tool)
		}
	}
	out := t.TempDir()
	build := exec.Command("bash", "../../packaging/build-deb")
	build.Env = append(os.Environ(), "ARCHS=amd64", "OUT="+out)
	b, err := build.Output()
	if err != nil {
		t.Fatalf("build-deb: %v\n%s", err, b)
	}
	built := strings.Fields(string(b))
	if len(built) != 3 || !strings.HasSuffix(built[1], ".x86_64.rpm") || !strings.HasSuffix(built[2], "_amd64.apk") {
		t.Fatalf("build-deb wrote %q, want a .deb, an .rpm and an .apk", built)
	}
	deb := built[0]
	if !strings.HasPrefix(filepath.Base(deb), "mcpgw_0.") || !strings.HasSuffix(deb, "_amd64.deb") {
		t.Fatalf("package name %q", deb)
	}
	run := func(name string, args ...string) string {
		t.Helper()
		b, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, b)
		}
		return string(b)
	}
	info := run("dpkg-deb", "--info", deb)
	for _, want := range []string{"Package: mcpgw", "Architecture: amd64", "Depends: adduser", "conffiles", "postinst", "postrm"} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb --info lacks %q:\n%s", want, info)
		}
	}
	contents := run("dpkg-deb", "--contents", deb)
	for _, want := range []string{"./usr/bin/mcpgw", "./lib/systemd/system/mcpgw.service", "./etc/mcpgw/config.toml", "./etc/logrotate.d/mcpgw",
		"./usr/share/man/man1/mcpgw.1.gz", "./usr/share/man/man5/mcpgw.toml.5.gz", "./usr/share/doc/mcpgw/copyright",
		"./usr/share/doc/mcpgw/changelog.gz", "./usr/share/doc/mcpgw/docs/configuration.md"} {
		if !strings.Contains(contents, want) {
			t.Errorf("dpkg-deb --contents lacks %s:\n%s", want, contents)
		}
	}
	if conf := run("dpkg-deb", "--field", deb, "Version"); !strings.HasPrefix(conf, "0.") {
		t.Errorf("version %q", conf)
	}
	root := t.TempDir()
	run("dpkg-deb", "-x", deb, root)
	bin := filepath.Join(root, "usr/bin/mcpgw")
	if v := run(bin, "version"); !strings.HasPrefix(v, "mcpgw 0.") {
		t.Errorf("version: %q", v)
	}
	run(bin, "check", "-config", filepath.Join(root, "etc/mcpgw/config.toml"))
	// systemd-analyze verify wants the unit's commands to exist: point
	// ExecStart at the extracted binary. It warns, with status 0, about
	// unknown keys: any output is a failure.
	unit, err := os.ReadFile(filepath.Join(root, "lib/systemd/system/mcpgw.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify", "Restart=on-failure", "User=mcpgw", "SupplementaryGroups=dialout",
		"AmbientCapabilities=CAP_NET_BIND_SERVICE", "ProtectSystem=strict", "ProtectHome=yes", "NoNewPrivileges=yes",
		"StateDirectory=", "LogsDirectory=", "ExecReload=/bin/kill -HUP $MAINPID"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %s", want)
		}
	}
	check := filepath.Join(t.TempDir(), "mcpgw.service")
	os.WriteFile(check, []byte(strings.ReplaceAll(string(unit), "/usr/bin/mcpgw", bin)), 0o644)
	if b, err := exec.Command("systemd-analyze", "verify", check).CombinedOutput(); err != nil || len(b) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, b)
	}
	// The sandbox: exposure 3.5 or lower ("OK"); what it lets the
	// gateway do is TestSystemCallsWithinTheUnit's to check.
	for _, want := range []string{"UMask=0027", "DevicePolicy=closed", "DeviceAllow=char-ttyUSB rw", "SystemCallFilter=@system-service",
		"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK", "ProtectKernelTunables=yes"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %s", want)
		}
	}
	if b, err := exec.Command("systemd-analyze", "security", "--offline=yes", "--threshold=35", check).CombinedOutput(); err != nil {
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		t.Errorf("systemd-analyze security: %v: %s", err, lines[len(lines)-1])
	}
	// The maintainer scripts go through deb-systemd-helper, not systemctl
	// enable (lintian's maintainer-script-calls-systemctl).
	postinst, err := os.ReadFile("../../packaging/deb/postinst")
	if err != nil || !strings.Contains(string(postinst), "deb-systemd-helper enable") || strings.Contains(string(postinst), "systemctl enable") {
		t.Errorf("postinst: %v", err)
	}
	// Every Go module in the binary is in the copyright file.
	copyright, err := os.ReadFile(filepath.Join(root, "usr/share/doc/mcpgw/copyright"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(run("go", "version", "-m", bin), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "dep" && !strings.Contains(string(copyright), f[1]) {
			t.Errorf("the copyright file does not name %s, which the binary links", f[1])
		}
	}
	lintianCheck(t, deb)
}

// lintianCheck runs lintian on deb: no error, no warning (an override
// in the package says why it holds).
func lintianCheck(t *testing.T, deb string) {
	t.Helper()
	if _, err := exec.LookPath("lintian"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("lintian is not installed: .ci/run must install it")
		}
		t.Log("lintian is not installed: the package is not checked against Debian's policy")
		return
	}
	b, err := exec.Command("lintian", "--fail-on", "error,warning", deb).CombinedOutput()
	if err != nil {
		t.Errorf("lintian: %v\n%s", err, b)
	}
}
