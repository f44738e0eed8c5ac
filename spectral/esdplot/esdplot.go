// Package esdplot draws spectral analyses: a layer's empirical spectral density on log-log axes with its power-law
// fit (WeightWatcher's "esd" plot), and α across the layers of a model. Plots are gonum/plot values; Save writes
// one as SVG and PNG.
package esdplot

import (
	"errors"
	"fmt"
	"image/color"
	"math"
	"slices"

	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/spectral"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

var (
	barColor  = color.NRGBA{R: 70, G: 110, B: 200, A: 160}
	fitColor  = color.NRGBA{R: 210, G: 40, B: 40, A: 255}
	xminColor = color.NRGBA{R: 230, G: 120, B: 0, A: 255}
	bandColor = color.NRGBA{R: 120, G: 120, B: 120, A: 255}
)

// histogramBins is WeightWatcher's plot_loghist resolution.
const histogramBins = 100

// ESD plots eigenvalues (any order) as a density histogram over 100 log-spaced bins — of the eigenvalues above
// xmin/100 as WeightWatcher's plot_loghist shows them — with the fitted power law p(λ) = (α−1)/xmin·(λ/xmin)^(−α)
// dashed from xmin and a vertical line at xmin. WeightWatcher overlays the tail's own density; here the fitted
// law is scaled by the tail's share of the plotted eigenvalues so that it lies on the histogram it describes.
func ESD(title string, evals []float64, fit spectral.PowerLaw) (*plot.Plot, error) {
	floor := 0.0
	if fit.Status == spectral.StatusSuccess {
		floor = fit.XMin / 100
	} else if len(evals) > 0 {
		floor = 0.4 * slices.Max(evals) / 100 // WeightWatcher's choice when the fit failed
	}
	var x []float64
	for _, v := range evals {
		if v > floor && v > 0 {
			x = append(x, v)
		}
	}
	if len(x) < 2 {
		return nil, errors.New("esdplot: fewer than two positive eigenvalues to plot")
	}
	slices.Sort(x)
	lo, hi := math.Log10(x[0]), math.Log10(x[len(x)-1])
	if hi == lo {
		lo, hi = lo-0.5, hi+0.5
	}
	width := (hi - lo) / histogramBins
	counts := make([]float64, histogramBins)
	for _, v := range x {
		counts[min(int((math.Log10(v)-lo)/width), histogramBins-1)]++
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "eigenvalue λ = σ²"
	p.Y.Label.Text = "density"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker, p.Y.Tick.Marker = plot.LogTicks{Prec: 2}, plot.LogTicks{Prec: 2}

	minDensity := math.Inf(1)
	type bar struct{ x0, x1, y float64 }
	var bars []bar
	for i, c := range counts {
		if c == 0 {
			continue
		}
		x0, x1 := math.Pow(10, lo+float64(i)*width), math.Pow(10, lo+float64(i+1)*width)
		d := c / float64(len(x)) / (x1 - x0)
		bars = append(bars, bar{x0, x1, d})
		minDensity = min(minDensity, d)
	}
	base := minDensity / 10 // the bottom of the bars: a log axis has no zero
	for _, b := range bars {
		poly, err := plotter.NewPolygon(plotter.XYs{{X: b.x0, Y: base}, {X: b.x1, Y: base}, {X: b.x1, Y: b.y}, {X: b.x0, Y: b.y}})
		if err != nil {
			return nil, err
		}
		poly.Color, poly.LineStyle.Width = barColor, 0
		p.Add(poly)
	}
	if fit.Status == spectral.StatusSuccess {
		tail := 0
		for _, v := range x {
			if v >= fit.XMin {
				tail++
			}
		}
		share := float64(tail) / float64(len(x))
		var line plotter.XYs
		for i := range 101 {
			v := fit.XMin * math.Pow(x[len(x)-1]/fit.XMin, float64(i)/100)
			if y := share * (fit.Alpha - 1) / fit.XMin * math.Pow(v/fit.XMin, -fit.Alpha); y > base {
				line = append(line, plotter.XY{X: v, Y: y})
			}
		}
		if len(line) > 1 {
			l, err := plotter.NewLine(line)
			if err != nil {
				return nil, err
			}
			l.Color, l.Width, l.Dashes = fitColor, vg.Points(1.5), []vg.Length{vg.Points(5), vg.Points(3)}
			p.Add(l)
			p.Legend.Add(fmt.Sprintf("power law α = %.3f, D = %.3f", fit.Alpha, fit.D), l)
		}
		xl, err := vertical(fit.XMin, base, slices.Max(counts)/float64(len(x))/minWidth(lo, width), xminColor)
		if err != nil {
			return nil, err
		}
		p.Add(xl)
		p.Legend.Add(fmt.Sprintf("xmin = %.4g", fit.XMin), xl)
	} else {
		p.Title.Text += " (power-law fit failed)"
	}
	p.Legend.Top = true
	return p, nil
}

// minWidth is the width of the narrowest (first) log bin, which bounds the largest density a bin can show.
func minWidth(lo, width float64) float64 { return math.Pow(10, lo+width) - math.Pow(10, lo) }

func vertical(x, y0, y1 float64, c color.Color) (*plotter.Line, error) {
	l, err := plotter.NewLine(plotter.XYs{{X: x, Y: y0}, {X: x, Y: y1}})
	if err != nil {
		return nil, err
	}
	l.Color, l.Width = c, vg.Points(1)
	return l, nil
}

// Alphas plots α per layer in order, with WeightWatcher's thresholds at 2 (below: over-trained) and 6 (above:
// under-trained). Layers whose fit failed (α < 0) are left out.
func Alphas(title string, alphas []float64) (*plot.Plot, error) {
	var pts plotter.XYs
	for i, a := range alphas {
		if a > 0 && !math.IsInf(a, 0) {
			pts = append(pts, plotter.XY{X: float64(i), Y: a})
		}
	}
	if len(pts) == 0 {
		return nil, errors.New("esdplot: no layer has a power-law fit")
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "layer (in file order)"
	p.Y.Label.Text = "power-law α"
	p.Y.Min = 0
	s, err := plotter.NewScatter(pts)
	if err != nil {
		return nil, err
	}
	s.GlyphStyle.Color, s.GlyphStyle.Shape, s.GlyphStyle.Radius = barColor, draw.CircleGlyph{}, vg.Points(2.5)
	p.Add(s)
	right := float64(max(len(alphas)-1, 1))
	for _, t := range []float64{spectral.OverTrained, spectral.UnderTrained} {
		l, err := plotter.NewLine(plotter.XYs{{X: 0, Y: t}, {X: right, Y: t}})
		if err != nil {
			return nil, err
		}
		l.Color, l.Dashes = bandColor, []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(l)
	}
	p.Y.Max = max(p.Y.Max, spectral.UnderTrained+1)
	return p, nil
}

// Size of saved plots.
const (
	width  = 6 * vg.Inch
	height = 4 * vg.Inch
)

// Save writes p to base+".svg" and base+".png", each atomically.
func Save(p *plot.Plot, base string) error {
	for _, format := range []string{"svg", "png"} {
		wt, err := p.WriterTo(width, height, format)
		if err != nil {
			return err
		}
		f, err := atomicfile.Create(base + "." + format)
		if err != nil {
			return err
		}
		if _, err := wt.WriteTo(f); err != nil {
			f.Abort()
			return err
		}
		if err := f.Commit(); err != nil {
			return err
		}
	}
	return nil
}
