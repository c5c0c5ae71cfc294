"""The compiled model in memory (`compiled`), its bitset masks (`masks`), the `.mome` file
(`io`) and what `inspect` reports about it (`describe`). numpy + bitarray + safetensors only."""
