"""The data path: registry -> read -> convert -> tokenize -> split, each step a small module."""
