from vadasm.io.figure import pyplot, save_plot


def test_save_plot_labels_writes_a_png_and_frees_the_figure(tmp_path):
    plt = pyplot()
    assert plt.get_backend().lower() == "agg"
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0], label="line")
    path = save_plot(fig, ax, tmp_path / "p.png", xlabel="x", ylabel="y", title="t")
    assert path == tmp_path / "p.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("x", "y", "t")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["line"]
    assert not plt.fignum_exists(fig.number)
