# frozen_string_literal: true

require "rexml/document"
require "stringio"
require_relative "../bench/support"
require_relative "../bench/chart"

RSpec.describe Bench::Chart do
  let(:rows) do
    [["(a) frames <&>",
      { "Parallel.map" => [30.0, 12.0], "Numo::Parallel.map" => [15.0, 6.0], "baseline" => [10.0, nil] }],
     ["(b) large", { "Parallel.map" => [300.0, 240.0], "Numo::Parallel.map" => [75.0, 120.0] }]]
  end
  let(:svg) { REXML::Document.new(described_class.new(title: "2 workers", rows:).to_svg) }
  let(:texts) { REXML::XPath.match(svg, "//text").map(&:text) }
  # [fill, width] of the bars, background left out.
  let(:bars) { REXML::XPath.match(svg, "//rect")[1..].map { |r| [r["fill"], r["width"].to_f] } }

  it "writes well-formed SVG with the title, the metrics, every case and variant, and the values" do
    expect(svg.root.name).to eq("svg")
    expect(texts).to include("2 workers", "time (ms)", "parent peak RSS (MiB)", "(a) frames <&>", "(b) large",
                             "Parallel.map", "Numo::Parallel.map", "baseline", "30.0", "6.00", "300", "not measured")
  end

  it "draws one bar per measured value, scaled within its case, one color per variant and gray for the baseline" do
    expect(bars.size).to eq(9)
    blue, orange = described_class::COLORS
    expect(bars.first(5)).to eq([[blue, 260.0], [blue, 260.0], [orange, 130.0], [orange, 130.0],
                                 [described_class::BASELINE_COLOR, 86.7]])
    expect(bars.last(4).map(&:last)).to eq([260.0, 260.0, 65.0, 130.0])
  end

  it "writes the file it is given" do
    Dir.mktmpdir do |dir|
      path = File.join(dir, "chart.svg")
      described_class.new(title: "t", rows:).write(path)
      expect(File.read(path)).to start_with("<svg xmlns=\"http://www.w3.org/2000/svg\"")
    end
  end
end

RSpec.describe Bench::Progress do
  it "reports each step on stderr-like output with the count, the share done and what is left" do
    io = StringIO.new
    progress = described_class.new("bench:x", 2, io:, every: 0)
    progress.step("first")
    progress.step("second")
    progress.finish
    lines = io.string.lines
    expect(lines.size).to eq(2)
    expect(lines[0]).to match(%r{\Abench:x: 1/2 \(50%\) first, \S+ \S+, about \S+ \S+ left\n\z})
    expect(lines[1]).to match(%r{\Abench:x: 2/2 \(100%\) second, \S+ \S+\n\z})
  end

  it "writes only every few seconds to a file, and always the last step" do
    io = StringIO.new
    progress = described_class.new("bench:y", 3, io:, every: 3600)
    3.times { |i| progress.step("run #{i}") }
    expect(io.string.lines.map { |l| l[%r{\d+/\d+}] }).to eq(["3/3"])
  end
end
