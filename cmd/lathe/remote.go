package main

import (
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/remote"
	"github.com/urfave/cli/v2"
)

// httpFlags are the flags of every command that can read a model from an http(s) URL.
func httpFlags() []cli.Flag {
	return []cli.Flag{
		&cli.GenericFlag{Name: "header", Value: &headerList{}, Usage: "add `'NAME: VALUE'` to every HTTP request " +
			"(repeatable). A bearer token is taken from $LATHE_HTTP_TOKEN, or $HF_TOKEN for huggingface.co"},
		&cli.DurationFlag{Name: "http-timeout", Value: 30 * time.Second, Usage: "give up on an HTTP request " +
			"after `DURATION` (it is retried 3 times)"},
	}
}

// headerList collects --header values. Unlike a string slice flag it does not split on commas, which HTTP header
// values contain.
type headerList struct{ h http.Header }

func (l *headerList) Set(s string) error {
	name, value, ok := strings.Cut(s, ":")
	name = strings.TrimSpace(name)
	if !ok || name == "" || strings.ContainsAny(name, " \t") {
		return fmt.Errorf("header %q: want 'NAME: VALUE'", s)
	}
	if l.h == nil {
		l.h = http.Header{}
	}
	l.h.Add(textproto.CanonicalMIMEHeaderKey(name), strings.TrimSpace(value))
	return nil
}

func (l *headerList) String() string {
	if l == nil {
		return ""
	}
	var parts []string
	for k, vs := range l.h {
		for _, v := range vs {
			parts = append(parts, k+": "+v)
		}
	}
	return strings.Join(parts, ", ")
}

// openModel opens a file, directory, "-" or URL, with the command's HTTP flags for a URL.
func openModel(c *cli.Context, path string) (*modelfile.Model, error) {
	if !remote.IsURL(path) {
		return modelfile.Open(path)
	}
	o := remote.Options{Timeout: c.Duration("http-timeout")}
	if l, ok := c.Generic("header").(*headerList); ok {
		o.Header = l.h
	}
	// An Authorization header given on the command line wins over the environment.
	if o.Header.Get("Authorization") == "" {
		o.Token = envToken(path, os.Getenv)
	}
	return modelfile.Open(path, modelfile.HTTP(o))
}

// envToken picks the bearer token for a URL: $LATHE_HTTP_TOKEN for any host, else $HF_TOKEN, which is meant for
// the Hugging Face Hub only and so is sent nowhere else.
func envToken(rawURL string, getenv func(string) string) string {
	if t := getenv("LATHE_HTTP_TOKEN"); t != "" {
		return t
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	host := u.Hostname()
	for _, hub := range []string{"huggingface.co", "hf.co"} {
		if host == hub || strings.HasSuffix(host, "."+hub) {
			return getenv("HF_TOKEN")
		}
	}
	return ""
}
