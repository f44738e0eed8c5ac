package main

import (
	"slices"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestPermuteArgs(t *testing.T) {
	var got struct {
		typ   string
		json  bool
		args  []string
		count int
	}
	app := &cli.App{Name: "lathe", Commands: []*cli.Command{{
		Name: "quantize",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "type", Aliases: []string{"t"}},
			&cli.BoolFlag{Name: "json"},
			&cli.StringSliceFlag{Name: "tensor-type"},
		},
		Action: func(c *cli.Context) error {
			got.typ, got.json, got.args = c.String("type"), c.Bool("json"), c.Args().Slice()
			got.count = len(c.StringSlice("tensor-type"))
			return nil
		},
	}}}
	cases := []struct {
		args []string
		typ  string
		json bool
		pos  []string
		tt   int
	}{
		{[]string{"lathe", "quantize", "in.gguf", "out.gguf", "--type", "Q4_K_M"}, "Q4_K_M", false, []string{"in.gguf", "out.gguf"}, 0},
		{[]string{"lathe", "quantize", "--json", "in.gguf", "-t=Q8_0", "-"}, "Q8_0", true, []string{"in.gguf", "-"}, 0},
		{[]string{"lathe", "quantize", "in", "--tensor-type", "a=Q8_0", "out", "--tensor-type", "b=F16", "--json"}, "", true, []string{"in", "out"}, 2},
		{[]string{"lathe", "quantize", "in", "--", "--type"}, "", false, []string{"in", "--type"}, 0},
	}
	for _, tc := range cases {
		got.typ, got.json, got.args, got.count = "", false, nil, 0
		if err := app.Run(permuteArgs(app, tc.args)); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if got.typ != tc.typ || got.json != tc.json || !slices.Equal(got.args, tc.pos) || got.count != tc.tt {
			t.Errorf("%v: got type=%q json=%v args=%v tensor-types=%d", tc.args, got.typ, got.json, got.args, got.count)
		}
	}
}
