package tensor

// MarshalText writes the type's name ("Q4_K"), so that reports encode types readably in JSON.
func (t DType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText accepts a type name in any case, as ParseDType does.
func (t *DType) UnmarshalText(b []byte) error {
	d, err := ParseDType(string(b))
	if err != nil {
		return err
	}
	*t = d
	return nil
}
