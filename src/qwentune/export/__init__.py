"""Export: the fine-tuned model taken where people run models: merging an adapter into its base (merge), and GGUF
files for llama.cpp and Ollama, the merged model (gguf, gguf_tokenizer) or the adapter alone (gguf_lora).

May import: config, errors, fsutil, models, torch, transformers, peft, gguf (gguf-py), numpy.
"""
