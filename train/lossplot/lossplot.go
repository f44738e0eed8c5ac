// Package lossplot draws the loss curves of a training run with gonum/plot.
package lossplot

import (
	"errors"
	"fmt"
	"image/color"
	"path/filepath"
	"strings"

	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/train"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

var (
	trainColor = color.NRGBA{R: 70, G: 110, B: 200, A: 255}
	valColor   = color.NRGBA{R: 210, G: 40, B: 40, A: 255}
)

// Plot draws the training loss of every step and the validation loss where it was computed, against the step.
func Plot(title string, logs []train.StepLog) (*plot.Plot, error) {
	var tr, val plotter.XYs
	for _, s := range logs {
		if s.Step > 0 {
			tr = append(tr, plotter.XY{X: float64(s.Step), Y: s.Loss})
		}
		if s.ValLoss != nil {
			val = append(val, plotter.XY{X: float64(s.Step), Y: *s.ValLoss})
		}
	}
	if len(tr) == 0 {
		return nil, errors.New("lossplot: no training step to plot")
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "step"
	p.Y.Label.Text = "loss (nats per token)"
	l, err := plotter.NewLine(tr)
	if err != nil {
		return nil, err
	}
	l.Color, l.Width = trainColor, vg.Points(1)
	p.Add(l)
	p.Legend.Add("training batch", l)
	if len(val) > 0 {
		vl, vs, err := plotter.NewLinePoints(val)
		if err != nil {
			return nil, err
		}
		vl.Color, vl.Width = valColor, vg.Points(1.5)
		vs.Color, vs.Shape, vs.Radius = valColor, draw.CircleGlyph{}, vg.Points(2.5)
		p.Add(vl, vs)
		p.Legend.Add("validation", vl, vs)
	}
	p.Legend.Top = true
	return p, nil
}

// Save writes p to path, atomically, as SVG or PNG by the path's extension.
func Save(p *plot.Plot, path string) error {
	format := strings.TrimPrefix(strings.ToLower(filepath.Ext(path)), ".")
	if format != "svg" && format != "png" {
		return fmt.Errorf("lossplot: %s: the plot is written as .svg or .png", path)
	}
	wt, err := p.WriterTo(6*vg.Inch, 4*vg.Inch, format)
	if err != nil {
		return err
	}
	f, err := atomicfile.Create(path)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := wt.WriteTo(f); err != nil {
		return fmt.Errorf("lossplot: %s: %w", path, err)
	}
	return f.Commit()
}

// Run is one named training run for Compare.
type Run struct {
	Name string
	Logs []train.StepLog
}

// Compare draws the validation loss of several runs against the step, one colour per run, where every run has at
// least two validation points; otherwise the training loss of each step.
func Compare(title string, runs []Run) (*plot.Plot, error) {
	if len(runs) == 0 {
		return nil, errors.New("lossplot: no run to compare")
	}
	curves := make([]plotter.XYs, len(runs))
	useVal := true
	for _, r := range runs {
		n := 0
		for _, s := range r.Logs {
			if s.ValLoss != nil {
				n++
			}
		}
		useVal = useVal && n >= 2
	}
	for i, r := range runs {
		for _, s := range r.Logs {
			switch {
			case useVal && s.ValLoss != nil:
				curves[i] = append(curves[i], plotter.XY{X: float64(s.Step), Y: *s.ValLoss})
			case !useVal && s.Step > 0:
				curves[i] = append(curves[i], plotter.XY{X: float64(s.Step), Y: s.Loss})
			}
		}
		if len(curves[i]) == 0 {
			return nil, fmt.Errorf("lossplot: run %s has no training step to plot", r.Name)
		}
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "step"
	p.Y.Label.Text = "training batch loss (nats per token)"
	if useVal {
		p.Y.Label.Text = "validation loss (nats per token)"
	}
	for i, r := range runs {
		l, err := plotter.NewLine(curves[i])
		if err != nil {
			return nil, err
		}
		l.Color, l.Width = plotutil.Color(i), vg.Points(1.2)
		l.Dashes = plotutil.Dashes(i / len(plotutil.DefaultColors))
		p.Add(l)
		p.Legend.Add(r.Name, l)
	}
	p.Legend.Top = true
	return p, nil
}
