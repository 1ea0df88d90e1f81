"""Export artifacts to other runtimes (GGUF for llama.cpp)."""
