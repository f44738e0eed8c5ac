package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/train"
)

// stepLog is `train --log`: one JSON line per step, written and flushed as the step ends, so that `tail -f` (or a
// pipe, with -) follows the run. Unlike the run's outputs it is not committed at the end: a killed run leaves the
// lines of the steps it finished, which is what a log is for. A resumed run keeps the lines of the steps before
// the one it resumes at and appends after them, so that the file reads as one uninterrupted run.
type stepLog struct {
	path   string
	resume bool // keep the earlier run's lines before the first step of this one
	w      io.Writer
	file   *os.File
	err    error // the first write error, reported at close
}

func newStepLog(path string, resume, force bool, inputs ...string) (*stepLog, error) {
	if path == "-" {
		return &stepLog{path: path, w: os.Stdout}, nil
	}
	if !force {
		if err := refuseInput(path, inputs); err != nil {
			return nil, err
		}
	}
	return &stepLog{path: path, resume: resume}, nil
}

// write appends one record, opening the file at the first one: only then is the step a resumed run starts at
// known.
func (l *stepLog) write(rec train.StepLog) {
	if l.err != nil {
		return
	}
	if l.w == nil {
		if l.err = l.open(rec.Step); l.err != nil {
			return
		}
	}
	line, err := json.Marshal(rec)
	if err != nil {
		l.err = err
		return
	}
	if _, err := l.w.Write(append(line, '\n')); err != nil {
		l.err = fmt.Errorf("train: --log %s: %w", l.path, err)
	}
}

// open starts the file: empty for a new run, or, for a resumed one, holding the earlier run's lines for steps
// before step. The kept lines are written to a temporary file renamed over the log, so a failure
// here leaves the earlier log as it was.
func (l *stepLog) open(step int) error {
	var kept []byte
	if l.resume {
		old, err := os.ReadFile(l.path)
		if err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("train: --log %s: %w", l.path, err)
		}
		for s := bufio.NewScanner(bytes.NewReader(old)); s.Scan(); {
			var rec struct {
				Step *int `json:"step"`
			}
			if json.Unmarshal(s.Bytes(), &rec) != nil || rec.Step == nil || *rec.Step >= step {
				break // the earlier run's lines are in step order; a torn last line ends them too
			}
			kept = append(append(kept, s.Bytes()...), '\n')
		}
	}
	f, err := atomicfile.Create(l.path)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(kept); err != nil {
		return fmt.Errorf("train: --log %s: %w", l.path, err)
	}
	if err := f.Commit(); err != nil {
		return err
	}
	if l.file, err = os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND, 0); err != nil {
		return fmt.Errorf("train: --log: %w", err)
	}
	l.w = l.file
	return nil
}

// close reports the first write error.
func (l *stepLog) close() error {
	if l.file != nil {
		if err := l.file.Close(); err != nil && l.err == nil {
			l.err = fmt.Errorf("train: --log %s: %w", l.path, err)
		}
	}
	return l.err
}
