//go:build linux

package packaging

// These tests build every package once (TestMain: the binaries for
// linux/amd64, linux/arm64 and windows/amd64, then cmd/mkpkg) and check them
// with the distributions' own tools: dpkg-deb, lintian, rpm, msiinfo,
// systemd-analyze, and a real dpkg install, remove and purge in a throwaway
// root. `make test-deps` installs those tools (Debian packages lintian, rpm,
// msitools, dpkg-dev, systemd).

import (
	"archive/zip"
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const (
	testVersion = "v0.9.0"
	testPkgVer  = "0.9.0"
	testMTime   = "1733616000" // 2024-12-08
)

var (
	dist     string // built packages
	bins     string // built binaries
	buildErr error
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("packaging: skipped in -short mode (builds every package)")
		os.Exit(0)
	}
	tmp, err := os.MkdirTemp("", "courier-packaging-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dist, bins = filepath.Join(tmp, "dist"), filepath.Join(tmp, "bin")
	buildErr = buildAll(tmp)
	code := m.Run()
	os.RemoveAll(tmp)
	os.Exit(code)
}

func buildAll(tmp string) error {
	ldflags := "-s -w -X main.version=" + testVersion + " -X main.commit=0123456789ab -X main.date=2024-12-08T00:00:00Z"
	for _, t := range []struct{ goos, goarch, pkgs string }{
		{"linux", "amd64", "./cmd/courier ./cmd/courier-ingest"},
		{"linux", "arm64", "./cmd/courier ./cmd/courier-ingest"},
		{"windows", "amd64", "./cmd/courier"},
	} {
		args := append([]string{"build", "-trimpath", "-ldflags", ldflags, "-o", filepath.Join(bins, t.goos+"_"+t.goarch) + "/"}, strings.Fields(t.pkgs)...)
		cmd := exec.Command("go", args...)
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+t.goos, "GOARCH="+t.goarch)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s/%s: %v\n%s", t.goos, t.goarch, err, out)
		}
	}
	return mkpkg(dist, "deb,rpm,msi,zip", "amd64,arm64")
}

func mkpkg(out, formats, arches string) error {
	cmd := exec.Command("go", "run", "./packaging/cmd/mkpkg", "-version", testVersion, "-mtime", testMTime,
		"-bin", bins, "-src", "packaging", "-out", out, "-formats", formats, "-arches", arches)
	cmd.Dir = ".."
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mkpkg: %v\n%s", err, b)
	}
	return nil
}

func built(t *testing.T) {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("building the packages failed: %v", buildErr)
	}
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: run `make test-deps` (Debian packages lintian rpm msitools dpkg-dev systemd)", tool)
		}
	}
}

func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func deb(name, arch string) string {
	return filepath.Join(dist, fmt.Sprintf("%s_%s-1_%s.deb", name, testPkgVer, arch))
}

func rpmFile(name, arch string) string {
	return filepath.Join(dist, fmt.Sprintf("%s-%s-1.%s.rpm", name, testPkgVer, arch))
}

var products = []struct{ name, config string }{
	{"courier", "/etc/courier/courier.yaml"},
	{"courier-ingest", "/etc/courier-ingest/courier-ingest.env"},
}

func TestDebContents(t *testing.T) {
	built(t)
	need(t, "dpkg-deb")
	for _, p := range products {
		for _, arch := range []string{"amd64", "arm64"} {
			f := deb(p.name, arch)
			list := sh(t, "dpkg-deb", "-c", f)
			for _, want := range []string{
				"-rwxr-xr-x root/root .* ./usr/bin/" + p.name + "\n",
				"-rw-r--r-- root/root .* ./lib/systemd/system/" + p.name + ".service\n",
				"-rw-r--r-- root/root .* ." + p.config + "\n",
				"./usr/share/doc/" + p.name + "/copyright\n",
				"./usr/share/doc/" + p.name + "/changelog.Debian.gz\n",
			} {
				if !regexp.MustCompile(want).MatchString(list) {
					t.Errorf("%s: no %q in\n%s", filepath.Base(f), want, list)
				}
			}
			if strings.Contains(list, "1970-") || !strings.Contains(list, "2024-12-08") {
				t.Errorf("%s: files do not carry the fixed mtime:\n%s", filepath.Base(f), list)
			}
			info := sh(t, "dpkg-deb", "-I", f)
			for _, want := range []string{"Package: " + p.name, "Version: " + testPkgVer + "-1", "Architecture: " + arch,
				" postinst", " prerm", " postrm", " conffiles"} {
				if !strings.Contains(info, want) {
					t.Errorf("%s: control lacks %q:\n%s", filepath.Base(f), want, info)
				}
			}
			if got := strings.TrimSpace(sh(t, "dpkg-deb", "-I", f, "conffiles")); got != p.config {
				t.Errorf("%s: conffiles = %q, want %q", filepath.Base(f), got, p.config)
			}
			postinst := sh(t, "dpkg-deb", "-I", f, "postinst")
			for _, want := range []string{"useradd --system", "install -d -m 0700 -o " + p.name, "deb-systemd-helper enable " + p.name + ".service", "try-restart " + p.name + ".service"} {
				if !strings.Contains(postinst, want) {
					t.Errorf("%s postinst lacks %q", filepath.Base(f), want)
				}
			}
			if strings.Contains(postinst, "deb-systemd-invoke start") {
				t.Errorf("%s postinst starts the service; it must only enable it", filepath.Base(f))
			}
			if prerm := sh(t, "dpkg-deb", "-I", f, "prerm"); !strings.Contains(prerm, "deb-systemd-invoke stop "+p.name) {
				t.Errorf("%s prerm does not stop the service:\n%s", filepath.Base(f), prerm)
			}
			if postrm := sh(t, "dpkg-deb", "-I", f, "postrm"); !regexp.MustCompile(`purge\)(?:[^;]|;[^;])*rm -rf /var/lib/` + p.name + `\n`).MatchString(postrm) {
				t.Errorf("%s postrm does not delete the data dir on purge only:\n%s", filepath.Base(f), postrm)
			}
		}
	}
}

func TestLintian(t *testing.T) {
	built(t)
	need(t, "lintian")
	out, err := exec.Command("lintian", "--no-tag-display-limit", "--display-info", deb("courier", "amd64"), deb("courier-ingest", "amd64"), deb("courier", "arm64")).CombinedOutput()
	t.Logf("lintian:\n%s", out)
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "E: ") {
			t.Errorf("lintian error: %s", line)
		}
	}
	// lintian exits 1 when it reports errors, 2 when it could not run.
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() > 1 || err != nil && !ok {
		t.Fatalf("lintian did not run: %v", err)
	}
}

func TestRPM(t *testing.T) {
	built(t)
	need(t, "rpm")
	for _, p := range products {
		for _, arch := range []string{"x86_64", "aarch64"} {
			f := rpmFile(p.name, arch)
			list := sh(t, "rpm", "-qlp", f)
			for _, want := range []string{"/usr/bin/" + p.name, "/usr/lib/systemd/system/" + p.name + ".service", p.config} {
				if !strings.Contains(list, want+"\n") {
					t.Errorf("%s: no %s in\n%s", filepath.Base(f), want, list)
				}
			}
			if got := sh(t, "rpm", "-qp", "--qf", "%{ARCH} %{VERSION}-%{RELEASE}", f); got != arch+" "+testPkgVer+"-1" {
				t.Errorf("%s: arch/version %q", filepath.Base(f), got)
			}
			flags := sh(t, "rpm", "-qp", "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]", f)
			if !regexp.MustCompile(`(?m)^cn ` + regexp.QuoteMeta(p.config) + `$`).MatchString(flags) {
				t.Errorf("%s: %s is not %%config(noreplace):\n%s", filepath.Base(f), p.config, flags)
			}
			scripts := sh(t, "rpm", "-qp", "--scripts", f)
			for _, want := range []string{
				"postinstall scriptlet", "useradd --system", "install -d -m 0700 -o " + p.name,
				"systemctl --no-reload enable " + p.name + ".service",
				"preuninstall scriptlet", "disable --now " + p.name + ".service",
				"postuninstall scriptlet", "try-restart " + p.name + ".service",
			} {
				if !strings.Contains(scripts, want) {
					t.Errorf("%s: scripts lack %q:\n%s", filepath.Base(f), want, scripts)
				}
			}
		}
	}
}

func TestMSI(t *testing.T) {
	built(t)
	need(t, "msiinfo")
	f := filepath.Join(dist, "courier_"+testPkgVer+"_windows_amd64.msi")
	si := sh(t, "msiinfo", "export", f, "ServiceInstall")
	// Name courier, own process (16), automatic (2), LocalSystem, run --config under ProgramData.
	if !regexp.MustCompile(`(?m)^CourierService\tcourier\tCourier edge agent\t16\t2\t1\t\t\tLocalSystem\t\trun --config "\[CommonAppDataFolder\]Courier\\courier.yaml"\tCourierExe\t`).MatchString(si) {
		t.Errorf("ServiceInstall:\n%s", si)
	}
	sc := strings.ReplaceAll(sh(t, "msiinfo", "export", f, "ServiceControl"), "\r\n", "\n") // msiinfo writes CRLF
	// 162 = stop on install and uninstall (2+32), delete on uninstall (128).
	if !regexp.MustCompile(`(?m)^CourierServiceControl\tcourier\t162\t\t1\tCourierExe$`).MatchString(sc) {
		t.Errorf("ServiceControl:\n%s", sc)
	}
	ca := sh(t, "msiinfo", "export", f, "CustomAction")
	for _, want := range []string{
		"SetSCEXE\t51\tSCEXE\t[System64Folder]sc.exe", // set property (immediate)
		// 3186 = 50 (exe named by a property) + 64 (ignore exit) + 1024 (deferred) + 2048 (no impersonation)
		"CourierServiceRecovery\t3186\tSCEXE\tfailure courier reset= 86400 actions= restart/5000/restart/5000/restart/60000",
		"CourierServiceDelayedStart\t3186\tSCEXE\tconfig courier start= delayed-auto",
	} {
		if !strings.Contains(strings.ReplaceAll(ca, "\t2099\t", "\t51\t"), want) {
			t.Errorf("CustomAction lacks %q:\n%s", want, ca)
		}
	}
	seq := sh(t, "msiinfo", "export", f, "InstallExecuteSequence")
	num := func(action string) int {
		m := regexp.MustCompile(`(?m)^` + action + `\t[^\t]*\t(\d+)`).FindStringSubmatch(seq)
		if m == nil {
			t.Fatalf("InstallExecuteSequence has no %s:\n%s", action, seq)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	if svcs, rec, del := num("InstallServices"), num("CourierServiceRecovery"), num("CourierServiceDelayedStart"); !(svcs < rec && rec < del && del < num("InstallFinalize")) {
		t.Errorf("custom actions not between InstallServices and InstallFinalize:\n%s", seq)
	}
	files := sh(t, "msiinfo", "export", f, "File")
	for _, want := range []string{"courier.exe", "courier.yaml"} {
		if !strings.Contains(files, want) {
			t.Errorf("File table lacks %s:\n%s", want, files)
		}
	}
	dirs := sh(t, "msiinfo", "export", f, "Directory")
	for _, want := range []string{"INSTALLDIR\tProgramFiles64Folder\tCourier", "DATADIR\tCommonAppDataFolder\tCourier"} {
		if !strings.Contains(dirs, want) {
			t.Errorf("Directory table lacks %q:\n%s", want, dirs)
		}
	}
}

func TestWindowsZip(t *testing.T) {
	built(t)
	f := filepath.Join(dist, "courier_"+testPkgVer+"_windows_amd64.zip")
	zr, err := zip.OpenReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	got := map[string]bool{}
	for _, zf := range zr.File {
		got[zf.Name] = true
		if !zf.Modified.Equal(zr.File[0].Modified) {
			t.Errorf("%s: mtime %v differs", zf.Name, zf.Modified)
		}
	}
	base := "courier_" + testPkgVer + "_windows_amd64/"
	for _, want := range []string{"courier.exe", "courier.yaml", "install.ps1", "README.md"} {
		if !got[base+want] {
			t.Errorf("zip lacks %s%s (has %v)", base, want, got)
		}
	}
}

// extract unpacks a .deb's files into a fresh folder.
func extract(t *testing.T, f string) string {
	dir := t.TempDir()
	sh(t, "dpkg-deb", "-x", f, dir)
	return dir
}

func TestPackagedBinaryRuns(t *testing.T) {
	built(t)
	need(t, "dpkg-deb")
	root := extract(t, deb("courier", "amd64"))
	v := sh(t, filepath.Join(root, "usr/bin/courier"), "version")
	if !strings.Contains(v, testVersion) || !strings.Contains(v, "0123456789ab") || !strings.Contains(v, "2024-12-08") {
		t.Errorf("courier version = %q, want version, commit and date", v)
	}
	out := sh(t, filepath.Join(root, "usr/bin/courier"), "config", "validate", filepath.Join(root, "etc/courier/courier.yaml"))
	if !strings.Contains(out, "valid") {
		t.Errorf("config validate: %s", out)
	}
	root = extract(t, deb("courier-ingest", "amd64"))
	if v := sh(t, filepath.Join(root, "usr/bin/courier-ingest"), "--version"); !strings.Contains(v, "courier-ingest "+testVersion) {
		t.Errorf("courier-ingest --version = %q", v)
	}
}

func TestUnitsHardened(t *testing.T) {
	built(t)
	need(t, "systemd-analyze", "dpkg-deb")
	for _, p := range products {
		out, err := exec.Command("systemd-analyze", "security", "--offline=true", "--no-pager", filepath.Join("systemd", p.name+".service")).CombinedOutput()
		m := regexp.MustCompile(`Overall exposure level for ` + regexp.QuoteMeta(p.name) + `\.service: (\d+\.\d+)`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("systemd-analyze security: %v\n%s", err, out)
		}
		score, _ := strconv.ParseFloat(string(m[1]), 64)
		t.Logf("%s.service exposure %.1f", p.name, score)
		if score > 2.0 {
			t.Errorf("%s.service exposure %.1f > 2.0:\n%s", p.name, score, out)
		}
		// verify against the installed files: the unit's binaries must exist.
		root := extract(t, deb(p.name, "amd64"))
		unit := filepath.Join(root, "lib/systemd/system", p.name+".service")
		b, err := os.ReadFile(unit)
		if err != nil {
			t.Fatal(err)
		}
		local := strings.ReplaceAll(string(b), "/usr/bin/"+p.name, filepath.Join(root, "usr/bin", p.name))
		local = strings.ReplaceAll(local, "EnvironmentFile=/etc/", "EnvironmentFile="+root+"/etc/")
		check := filepath.Join(t.TempDir(), p.name+".service")
		if err := os.WriteFile(check, []byte(local), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("systemd-analyze", "verify", "--man=no", check).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", p.name, err, out)
		}
	}
}

func TestReproducible(t *testing.T) {
	built(t)
	again := t.TempDir()
	if err := mkpkg(again, "deb,rpm,zip", "amd64"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{
		filepath.Base(deb("courier", "amd64")), filepath.Base(rpmFile("courier", "x86_64")),
		"courier_" + testPkgVer + "_windows_amd64.zip",
	} {
		a, err := os.ReadFile(filepath.Join(dist, f))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(again, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two builds of the same input", f)
		}
	}
}

// chrootSetup runs before each dpkg call, in a private mount namespace
// (unshare -m): the throwaway root R gets the host's /usr as an overlay (so
// dpkg's writes to /usr land in R/.ov/upper, never on the host), a copy of
// /etc, an empty dpkg database and /dev/null. dpkg --root runs the maintainer
// scripts chrooted into R.
const chrootSetup = `set -e
R="$1"; shift
mkdir -p "$R/usr" "$R/etc" "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates" "$R/var/lib/dpkg/triggers" \
  "$R/var/log" "$R/tmp" "$R/run" "$R/dev" "$R/.ov/upper" "$R/.ov/work"
if [ ! -e "$R/.ready" ]; then
  cp -a /etc/. "$R/etc/"
  rm -rf "$R/etc/systemd/system/"*.wants/courier*.service
  touch "$R/var/lib/dpkg/status" "$R/var/lib/dpkg/available" "$R/dev/null"
  for l in bin sbin lib lib64; do if [ -L "/$l" ]; then ln -sfn "usr/$l" "$R/$l"; fi; done
  touch "$R/.ready"
fi
mount -t overlay overlay -o "lowerdir=/usr,upperdir=$R/.ov/upper,workdir=$R/.ov/work" "$R/usr"
mount --bind /dev/null "$R/dev/null"
exec dpkg --root="$R" "$@"
`

func dpkgIn(t *testing.T, root string, args ...string) string {
	t.Helper()
	cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", chrootSetup, "sh", root}, args...)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg %s in %s: %v\n%s", strings.Join(args, " "), root, err, out)
	}
	return string(out)
}

func TestDebInstallRemovePurge(t *testing.T) {
	built(t)
	need(t, "dpkg", "unshare", "useradd")
	if os.Getuid() != 0 {
		t.Skip("needs root (chroot, mount namespace): CI and the dev machines run as root")
	}
	root := t.TempDir()
	dpkgIn(t, root, "-i", deb("courier", "amd64"))

	passwd, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^courier:x:(\d+):(\d+):[^:]*:/var/lib/courier:/usr/sbin/nologin$`).FindStringSubmatch(string(passwd))
	if m == nil {
		t.Fatalf("no courier system user in the root's /etc/passwd:\n%s", passwd)
	}
	if uid, _ := strconv.Atoi(m[1]); uid >= 1000 || uid == 0 {
		t.Errorf("courier uid %d is not a system uid", uid)
	}
	data := filepath.Join(root, "var/lib/courier")
	fi, err := os.Stat(data)
	if err != nil || fi.Mode().Perm() != 0o700 || !fi.IsDir() {
		t.Fatalf("data dir: %v %v, want a 0700 directory", fi, err)
	}
	if st := fi.Sys(); st != nil && fmt.Sprint(statUID(st)) != m[1] {
		t.Errorf("data dir owned by uid %v, want courier (%s)", statUID(st), m[1])
	}
	wants := filepath.Join(root, "etc/systemd/system/multi-user.target.wants/courier.service")
	if dst, err := os.Readlink(wants); err != nil || dst != "/lib/systemd/system/courier.service" {
		t.Errorf("service not enabled: %s -> %q (%v)", wants, dst, err)
	}
	for _, f := range []string{"etc/courier/courier.yaml", ".ov/upper/bin/courier", ".ov/upper/lib/systemd/system/courier.service"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("installed file: %v", err)
		}
	}
	// What the spool would hold: it must survive remove.
	if err := os.WriteFile(filepath.Join(data, "spool.db"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	dpkgIn(t, root, "-r", "courier")
	if _, err := os.Lstat(wants); err == nil {
		t.Errorf("service still enabled after remove")
	}
	if _, err := os.Stat(filepath.Join(data, "spool.db")); err != nil {
		t.Errorf("remove deleted the spool: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/courier/courier.yaml")); err != nil {
		t.Errorf("remove deleted the conffile: %v", err)
	}
	if fi, err := os.Lstat(filepath.Join(root, ".ov/upper/bin/courier")); err == nil && fi.Mode().IsRegular() {
		t.Errorf("remove left /usr/bin/courier")
	}

	dpkgIn(t, root, "-P", "courier")
	if _, err := os.Stat(data); err == nil {
		t.Errorf("purge left %s", data)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/courier/courier.yaml")); err == nil {
		t.Errorf("purge left the conffile")
	}
	if status, _ := os.ReadFile(filepath.Join(root, "var/lib/dpkg/status")); strings.Contains(string(status), "Package: courier\n") {
		t.Errorf("dpkg still lists courier after purge:\n%s", status)
	}
}
