// Command mkpkg builds Courier's installable packages into one folder:
//
//   - .deb (amd64, arm64) and .rpm (x86_64, aarch64) for courier and
//     courier-ingest, made with nfpm v2 as a library;
//   - a Windows MSI for courier, made with wixl (Debian's msitools) from
//     packaging/windows/courier.wxs;
//   - courier_<version>_windows_amd64.zip with courier.exe, the example config
//     and install.ps1.
//
// Every file in every package carries the same modification time
// (-mtime, default $SOURCE_DATE_EPOCH), so two builds of one commit are
// byte-identical.
//
//	mkpkg -version v1.2.3 -bin bin/dist -out dist [-mtime 1733616000] [-formats deb,rpm,msi,zip]
//
// -bin holds linux_amd64/, linux_arm64/ (courier, courier-ingest) and
// windows_amd64/courier.exe, as `make package` builds them.
package main

import (
	"archive/zip"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "mkpkg:", err)
		os.Exit(1)
	}
}

type options struct {
	version string    // as git describe says it (v1.2.3, v1.2.3-4-gabc, abc1234-dirty)
	mtime   time.Time // every file's modification time
	bin     string    // built binaries, per GOOS_GOARCH
	src     string    // the packaging/ folder (units, scripts, config, windows)
	out     string
	formats map[string]bool
	arches  []string
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("mkpkg", flag.ContinueOnError)
	version := fs.String("version", "", "version (git describe form; a leading v is dropped)")
	mtime := fs.Int64("mtime", -1, "modification time of every file, Unix seconds (default $SOURCE_DATE_EPOCH)")
	bin := fs.String("bin", "bin/dist", "folder with linux_amd64/, linux_arm64/, windows_amd64/ binaries")
	src := fs.String("src", "packaging", "the packaging/ folder")
	out := fs.String("out", "dist", "output folder")
	formats := fs.String("formats", "deb,rpm,msi,zip", "what to build")
	arches := fs.String("arches", "amd64,arm64", "Linux architectures for deb and rpm")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *version == "" {
		return errors.New("-version is required")
	}
	o := options{version: *version, bin: *bin, src: *src, out: *out, formats: map[string]bool{}}
	for _, a := range strings.Split(*arches, ",") {
		switch a = strings.TrimSpace(a); a {
		case "amd64", "arm64":
			o.arches = append(o.arches, a)
		case "":
		default:
			return fmt.Errorf("-arches: unknown architecture %q (want amd64, arm64)", a)
		}
	}
	if *mtime < 0 {
		sde := os.Getenv("SOURCE_DATE_EPOCH")
		if sde == "" {
			return errors.New("-mtime or SOURCE_DATE_EPOCH is required (packages must be reproducible)")
		}
		v, err := strconv.ParseInt(sde, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", sde, err)
		}
		*mtime = v
	}
	o.mtime = time.Unix(*mtime, 0).UTC()
	for _, f := range strings.Split(*formats, ",") {
		switch f = strings.TrimSpace(f); f {
		case "deb", "rpm", "msi", "zip":
			o.formats[f] = true
		case "":
		default:
			return fmt.Errorf("-formats: unknown format %q (want deb, rpm, msi, zip)", f)
		}
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("output folder: %w", err)
	}
	built, err := build(o)
	for _, b := range built {
		fmt.Fprintln(stdout, b)
	}
	return err
}

func build(o options) ([]string, error) {
	var built []string
	for _, arch := range o.arches {
		for _, p := range products {
			for _, format := range []string{"deb", "rpm"} {
				if !o.formats[format] {
					continue
				}
				path, err := linuxPackage(o, p, arch, format)
				if err != nil {
					return built, fmt.Errorf("%s %s %s: %w", p.name, format, arch, err)
				}
				built = append(built, path)
			}
		}
	}
	if o.formats["zip"] {
		path, err := windowsZip(o)
		if err != nil {
			return built, fmt.Errorf("windows zip: %w", err)
		}
		built = append(built, path)
	}
	if o.formats["msi"] {
		path, err := windowsMSI(o)
		if err != nil {
			return built, fmt.Errorf("windows msi: %w", err)
		}
		built = append(built, path)
	}
	return built, nil
}

// product is one Linux package: a binary, its unit, its config.
type product struct {
	name        string
	summary     string
	description string
	config      string // file under packaging/config/
	configDst   string
}

var products = []product{
	{
		name:    "courier",
		summary: "edge agent moving clinic files to central storage, verified",
		description: "Watches folders, MQTT feeds and HL7 over MLLP, spools each file durably,\n" +
			"uploads it with tus to courier-ingest and announces it once the server\n" +
			"has verified its SHA-256.",
		config:    "courier.yaml",
		configDst: "/etc/courier/courier.yaml",
	},
	{
		name:    "courier-ingest",
		summary: "Courier ingest: tus receiver with whole-file SHA-256 verification",
		description: "Receives Courier agents' uploads (tus 1.0 with the checksum extension)\n" +
			"into a file or S3 store and verifies every file's SHA-256.",
		config:    "courier-ingest.env",
		configDst: "/etc/courier-ingest/courier-ingest.env",
	},
}

// pkgVersion turns git describe output into a version dpkg and rpm order
// correctly: v1.2.3 -> 1.2.3, v1.2.3-4-gabc -> 1.2.3+4.gabc, a bare commit
// (no tag yet) abc1234-dirty -> 0.0.0~git.abc1234.dirty.
func pkgVersion(v string) string {
	v = strings.TrimPrefix(v, "v")
	if m := regexp.MustCompile(`^(\d+\.\d+\.\d+)(?:-(.+))?$`).FindStringSubmatch(v); m != nil {
		if m[2] == "" {
			return m[1]
		}
		return m[1] + "+" + sanitize(m[2])
	}
	return "0.0.0~git." + sanitize(v)
}

func sanitize(s string) string {
	return regexp.MustCompile(`[^A-Za-z0-9.]+`).ReplaceAllString(s, ".")
}

// msiVersion is the numeric x.y.z an MSI ProductVersion needs.
func msiVersion(v string) string {
	if m := regexp.MustCompile(`^v?(\d+\.\d+\.\d+)`).FindStringSubmatch(v); m != nil {
		return m[1]
	}
	return "0.0.0"
}

var rpmArch = map[string]string{"amd64": "x86_64", "arm64": "aarch64"}

func linuxPackage(o options, p product, arch, format string) (string, error) {
	binary := filepath.Join(o.bin, "linux_"+arch, p.name)
	if _, err := os.Stat(binary); err != nil {
		return "", fmt.Errorf("binary: %w (build it first: make package)", err)
	}
	scripts, err := renderScripts(o, p, format)
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(scripts)
	unitDir := "/lib/systemd/system"
	if format == "rpm" {
		unitDir = "/usr/lib/systemd/system"
	}
	doc := "/usr/share/doc/" + p.name
	file := func(mode os.FileMode) *files.ContentFileInfo {
		return &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode, MTime: o.mtime}
	}
	contents := files.Contents{
		{Source: binary, Destination: "/usr/bin/" + p.name, FileInfo: file(0o755)},
		{Source: filepath.Join(o.src, "systemd", p.name+".service"), Destination: unitDir + "/" + p.name + ".service", FileInfo: file(0o644)},
		{Source: filepath.Join(o.src, "config", p.config), Destination: p.configDst, Type: files.TypeConfigNoReplace, FileInfo: file(0o644)},
		{Source: filepath.Join(o.src, "README.md"), Destination: doc + "/README.md", Type: files.TypeRPMDoc, FileInfo: file(0o644)},
		{Source: filepath.Join(o.src, "deb", "copyright"), Destination: doc + "/copyright", Packager: "deb", FileInfo: file(0o644)},
		{Source: filepath.Join(scripts, "lintian-overrides"), Destination: "/usr/share/lintian/overrides/" + p.name, Packager: "deb", FileInfo: file(0o644)},
	}
	info := &nfpm.Info{
		Name:          p.name,
		Arch:          arch,
		Platform:      "linux",
		Version:       pkgVersion(o.version),
		VersionSchema: "none",
		Release:       "1",
		Section:       "net",
		Priority:      "optional",
		Maintainer:    "Courier maintainers <courier@edgecourier.invalid>",
		Description:   p.summary + "\n" + p.description,
		Vendor:        "Courier",
		Homepage:      "https://github.com/edgecourier/courier",
		License:       "Proprietary",
		MTime:         o.mtime,
		Overridables: nfpm.Overridables{
			Contents: contents,
			Umask:    0o022,
			Scripts: nfpm.Scripts{
				PostInstall: filepath.Join(scripts, "postinst"),
				PreRemove:   filepath.Join(scripts, "prerm"),
				PostRemove:  filepath.Join(scripts, "postrm"),
			},
			Deb: nfpm.Deb{Compression: "xz"},
			RPM: nfpm.RPM{
				Arch:        rpmArch[arch],
				BuildHost:   "courier-build", // not the build machine's name: reproducible
				Summary:     p.summary,
				Group:       "System Environment/Daemons",
				Compression: "xz",
				Packager:    "Courier maintainers",
			},
		},
	}
	if format == "deb" {
		// Debian wants a changelog; one entry for this build.
		cl := filepath.Join(scripts, "changelog.yml")
		entry := fmt.Sprintf("- semver: %q\n  date: %s\n  packager: Courier maintainers <courier@edgecourier.invalid>\n  deb:\n    urgency: low\n    distributions: [stable]\n  changes:\n    - commit: %q\n      note: \"Build of %s; see the project's git history.\"\n",
			info.Version+"-"+info.Release, o.mtime.Format(time.RFC3339), o.version, o.version)
		if err := os.WriteFile(cl, []byte(entry), 0o644); err != nil {
			return "", err
		}
		info.Changelog = cl
	}
	if format == "rpm" {
		info.Scripts = nfpm.Scripts{
			PostInstall: filepath.Join(scripts, "post"),
			PreRemove:   filepath.Join(scripts, "preun"),
			PostRemove:  filepath.Join(scripts, "postun"),
		}
	}
	info = nfpm.WithDefaults(info)
	pkger, err := nfpm.Get(format)
	if err != nil {
		return "", err
	}
	target := filepath.Join(o.out, pkger.ConventionalFileName(info))
	var buf bytes.Buffer
	if err := pkger.Package(info, &buf); err != nil {
		return "", err
	}
	if err := os.WriteFile(target, buf.Bytes(), 0o644); err != nil {
		return "", err
	}
	return target, nil
}

// renderScripts fills the maintainer script templates for one product.
func renderScripts(o options, p product, format string) (string, error) {
	dir, err := os.MkdirTemp("", "mkpkg-scripts-")
	if err != nil {
		return "", err
	}
	tmpls, err := filepath.Glob(filepath.Join(o.src, "scripts", format, "*"))
	if err != nil || len(tmpls) == 0 {
		os.RemoveAll(dir)
		return "", fmt.Errorf("no %s maintainer scripts under %s/scripts/%s", format, o.src, format)
	}
	if format == "deb" {
		tmpls = append(tmpls, filepath.Join(o.src, "deb", "lintian-overrides"))
	}
	r := strings.NewReplacer("@NAME@", p.name, "@DESC@", p.name+" service")
	for _, t := range tmpls {
		b, err := os.ReadFile(t)
		if err != nil {
			os.RemoveAll(dir)
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(t)), []byte(r.Replace(string(b))), 0o755); err != nil {
			os.RemoveAll(dir)
			return "", err
		}
	}
	return dir, nil
}

func windowsExe(o options) (string, error) {
	exe := filepath.Join(o.bin, "windows_amd64", "courier.exe")
	if _, err := os.Stat(exe); err != nil {
		return "", fmt.Errorf("binary: %w (build it first: make package)", err)
	}
	return exe, nil
}

// windowsZip: courier.exe, courier.yaml, install.ps1 and README.txt under a
// courier_<version>_windows_amd64/ folder.
func windowsZip(o options) (string, error) {
	exe, err := windowsExe(o)
	if err != nil {
		return "", err
	}
	base := "courier_" + pkgVersion(o.version) + "_windows_amd64"
	target := filepath.Join(o.out, base+".zip")
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range []struct{ src, name string }{
		{exe, "courier.exe"},
		{filepath.Join(o.src, "windows", "courier.yaml"), "courier.yaml"},
		{filepath.Join(o.src, "windows", "install.ps1"), "install.ps1"},
		{filepath.Join(o.src, "README.md"), "README.md"},
	} {
		b, err := os.ReadFile(f.src)
		if err != nil {
			return "", err
		}
		h := &zip.FileHeader{Name: base + "/" + f.name, Method: zip.Deflate, Modified: o.mtime}
		h.SetMode(0o644)
		w, err := zw.CreateHeader(h)
		if err != nil {
			return "", err
		}
		if _, err := w.Write(b); err != nil {
			return "", err
		}
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	return target, os.WriteFile(target, buf.Bytes(), 0o644)
}

// windowsMSI runs wixl on packaging/windows/courier.wxs.
func windowsMSI(o options) (string, error) {
	exe, err := windowsExe(o)
	if err != nil {
		return "", err
	}
	wixl, err := exec.LookPath("wixl")
	if err != nil {
		return "", fmt.Errorf("wixl not found (Debian package msitools; make test-deps installs it): %w", err)
	}
	// wixl finds sources relative to the .wxs: stage it with the two files.
	stage, err := os.MkdirTemp("", "mkpkg-msi-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(stage)
	for _, f := range []struct{ src, name string }{
		{exe, "courier.exe"},
		{filepath.Join(o.src, "windows", "courier.yaml"), "courier.yaml"},
		{filepath.Join(o.src, "windows", "courier.wxs"), "courier.wxs"},
	} {
		b, err := os.ReadFile(f.src)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(stage, f.name), b, 0o644); err != nil {
			return "", err
		}
	}
	target, err := filepath.Abs(filepath.Join(o.out, "courier_"+pkgVersion(o.version)+"_windows_amd64.msi"))
	if err != nil {
		return "", err
	}
	cmd := exec.Command(wixl, "--arch", "x64", "-D", "Version="+msiVersion(o.version), "-o", target, "courier.wxs")
	cmd.Dir = stage
	// wixl (libmsi/libgsf) stamps creation times from SOURCE_DATE_EPOCH.
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH="+strconv.FormatInt(o.mtime.Unix(), 10))
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("wixl: %w\n%s", err, out)
	}
	return target, nil
}
