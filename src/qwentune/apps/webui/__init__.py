"""`qwentune webui`: the whole path (data, train, evaluate, chat, compare and rate, export) in one Gradio page.

app.py builds the page and launches it; common.py holds what every tab shares (the settings the command line
pre-fills, the folders the page may touch, the translations). One module per tab (data_tab, train_tab,
evaluate_tab, chat_tab, compare_tab, export_tab) lays out its components and calls the same package functions
as the CLI; the work behind a tab that is more than a call lives beside it as plain functions with their own
tests (data_view: examples with their loss mask; runs: training as its own process; rating_view: blind A/B;
models: the loaded model every browser session shares, one generation at a time).

May import: everything below apps (config, errors, fsutil, data, models, training, inference, evaluation, export)
and apps' other modules; gradio only inside this package.
"""
