package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A full disk while writing a model to a file ends with exit 2 and the system's message naming the target, and leaves the target as
// it was (absent, or the complete previous file) with no temporary file beside it. The disk is a 256 KiB tmpfs
// mounted in a user namespace (`unshare -Urm`, no privileges needed where user namespaces are enabled), so the
// error comes from the kernel exactly as on a real full disk.
func TestFullDiskLeavesTargetIntact(t *testing.T) {
	if err := exec.Command("unshare", "-Urm", "true").Run(); err != nil {
		t.Skipf("cannot mount a small filesystem: unshare -Urm needs unprivileged user namespaces (%v)", err)
	}
	dir := t.TempDir()
	hf := filepath.Join(dir, "hf")
	// About 5 MB of F32 output: the 1 MiB output buffer fills several times, so the error comes in the middle of
	// the stream; the demo model's 660 KB fail when the buffer is flushed at the end.
	writeHFLlama(t, hf, 256, 512, 2)
	tiny := filepath.Join("..", "..", "internal", "demo", "tiny")
	previous := []byte("the previous complete file")
	for _, tc := range []struct {
		name     string
		args     []string // OUT is the target on the full disk
		previous bool
	}{
		{"convert streaming", []string{"convert", hf, "-o", "OUT", "--outtype", "f32"}, false},
		{"convert over previous", []string{"convert", hf, "-o", "OUT", "--outtype", "f32"}, true},
		{"convert at commit", []string{"convert", tiny, "-o", "OUT", "--outtype", "f32"}, false},
		{"cast", []string{"cast", filepath.Join(hf, "model.safetensors"), "OUT", "--dtype", "f32"}, true},
		{"quantize", []string{"quantize", hf, "OUT", "--type", "Q8_0"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			report := t.TempDir()
			mnt := filepath.Join(report, "disk")
			if err := os.Mkdir(mnt, 0o755); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(mnt, "out")
			if tc.previous {
				if err := os.WriteFile(filepath.Join(report, "previous"), previous, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			args := append([]string(nil), tc.args...)
			for i := range args {
				if args[i] == "OUT" {
					args[i] = out
				}
			}
			// The mount lives only in the namespace, so the script reports the disk's contents to report/ before
			// it exits with lathe's status.
			script := `d=$1; r=$2; shift 2
mount -t tmpfs -o size=256k lathe-full "$d" || exit 99
if [ -f "$r/previous" ]; then cp "$r/previous" "$d/out" || exit 99; fi
"$@"; rc=$?
ls -A "$d" > "$r/listing"
if [ -f "$d/out" ]; then cp "$d/out" "$r/out"; fi
exit $rc`
			cmd := exec.Command("unshare", append([]string{"-Urm", "sh", "-c", script, "sh", mnt, report, os.Args[0]},
				args...)...)
			cmd.Env = append(os.Environ(), "LATHE_RUN_MAIN=1")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("lathe succeeded on a full disk (%v)", err)
			}
			if exit.ExitCode() == 99 {
				t.Skipf("cannot mount a tmpfs in a user namespace: %s", stderr.String())
			}
			msg := stderr.String()
			if exit.ExitCode() != 2 || !strings.Contains(msg, "write "+out+": no space left on device") ||
				strings.Contains(msg, "panic") {
				t.Fatalf("exit %d, want 2 with the system's message on the target:\n%s", exit.ExitCode(), msg)
			}
			listing, err := os.ReadFile(filepath.Join(report, "listing"))
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(filepath.Join(report, "out"))
			want := ""
			if tc.previous {
				want = "out\n"
			}
			if string(listing) != want || !bytes.Equal(got, map[bool][]byte{true: previous}[tc.previous]) {
				t.Errorf("the full disk holds %q, target %q; want %q and the previous file only", listing, got, want)
			}
		})
	}
}
