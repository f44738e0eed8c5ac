package convert

// Title turns a model identifier such as a directory name ("lora-shakespeare-a") into the general.name gguf-py's
// Metadata.id_to_title gives it ("Lora Shakespeare A"), for writers of other GGUF files (adapters) that name
// themselves the way llama.cpp's converters do.
func Title(id string) string { return idToTitle(id) }
