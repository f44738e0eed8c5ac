package modelfile

import "github.com/lathe-ml/lathe/convert"

// decodeBitMoD swaps a safetensors model holding packed per-group datatypes (docs/bitmod.md) for its decoded F32
// weights, so that every command reads the values the file stands for. Each decoded weight keeps the file,
// offset and total size of its packed parts, so that sizes and bits per weight describe the file on disk. The
// packed set is closed once decoded.
func (m *Model) decodeBitMoD() error {
	dec, err := convert.DecodeBitMoD(m.Safetensors)
	if dec == nil && err == nil {
		return nil
	}
	m.Safetensors.Close()
	if err != nil {
		return err
	}
	stored := make(map[string]Tensor, len(m.Tensors))
	for _, t := range m.Tensors {
		stored[t.Name] = t
	}
	m.Tensors = m.Tensors[:0]
	for _, t := range dec.Tensors() {
		codes, scales, types := convert.BitMoDParts(t.Name)
		c, packed := stored[codes]
		if !packed {
			m.Tensors = append(m.Tensors, stored[t.Name])
			continue
		}
		m.Tensors = append(m.Tensors, Tensor{Name: t.Name, DType: t.DType, Shape: t.Shape, File: c.File, Offset: c.Offset,
			Size: c.Size + stored[scales].Size + stored[types].Size})
	}
	m.Safetensors = dec
	return nil
}
