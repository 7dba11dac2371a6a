# frozen_string_literal: true

require "cgi"

module Bench
  # A plain SVG bar chart of benchmark results: for each case, one bar per
  # variant ("Parallel.map", "Numo::Parallel.map", "baseline", ...) for time
  # and another for memory, side by side, each labelled with its value. Bars
  # are scaled within a case (a case's slowest variant spans the column), so
  # that cases of very different sizes stay readable. The SVG needs no
  # script or font of its own: a browser shows it, and a README embeds it
  # with ![...](path.svg).
  #
  #   Bench::Chart.new(
  #     title: "2 worker processes",
  #     rows: [["(a) 64 x UInt8[210,160,3]", {
  #       "Parallel.map" => [30.9, 12.7], "Numo::Parallel.map" => [21.0, 6.2], "baseline" => [17.7, nil]
  #     }]]
  #   ).write("bench/parallel.svg")
  #
  # Each row is a case's name and, per variant, [time in ms, memory in MiB];
  # nil where a value was not measured.
  class Chart
    METRICS = ["time (ms)", "parent peak RSS (MiB)"].freeze
    COLORS = %w[#4e79a7 #f28e2b #59a14f #b07aa1 #edc948 #76b7b2].freeze
    BASELINE_COLOR = "#9d9d9d"
    LABEL_WIDTH = 190
    COLUMN_WIDTH = 330
    BAR = 16
    STEP = 21
    FONT = "font-family=\"Helvetica, Arial, sans-serif\""
    STYLE = { size: "font-size", weight: "font-weight", fill: "fill", anchor: "text-anchor" }.freeze

    def initialize(title:, rows:, metrics: METRICS)
      @title = title
      @rows = rows
      @metrics = metrics
      @variants = rows.flat_map { |_, results| results.keys }.uniq
    end

    def write(path)
      File.write(path, to_svg)
      path
    end

    def to_svg
      body = []
      y = header(body)
      @rows.each { |name, results| y = group(body, name, results, y) }
      width = LABEL_WIDTH + (@metrics.size * COLUMN_WIDTH) + 20
      <<~SVG
        <svg xmlns="http://www.w3.org/2000/svg" width="#{width}" height="#{y + 10}" viewBox="0 0 #{width} #{y + 10}" #{FONT} font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        #{body.join("\n")}
        </svg>
      SVG
    end

    private

    # The title, a note on the scale, and the metrics' column headings.
    def header(body)
      body << text(10, 22, @title, size: 16, weight: "bold")
      body << text(10, 40, "each case's bars are scaled to its largest value; shorter is better", fill: "#555")
      @metrics.each_with_index do |metric, i|
        body << text(column_x(i), 64, metric, weight: "bold")
      end
      72
    end

    # One case: its name, then a line per variant with a bar per metric.
    def group(body, name, results, top)
      top += 20
      body << text(10, top, name, size: 13, weight: "bold")
      top += 6
      scales = @metrics.each_index.map { |i| results.values.filter_map { |values| values[i] }.max.to_f }
      @variants.each do |variant|
        next unless results.key?(variant)

        body << text(LABEL_WIDTH - 8, top + BAR - 4, variant, anchor: "end")
        @metrics.each_index { |i| body << bar(i, top, results[variant][i], scales[i], variant) }
        top += STEP
      end
      top + 4
    end

    def bar(metric, top, value, scale, variant)
      left = column_x(metric)
      return text(left, top + BAR - 4, "not measured", fill: "#777") if value.nil?

      length = scale.positive? ? [(COLUMN_WIDTH - 70) * value / scale, 1].max : 1
      %(<rect x="#{left}" y="#{top}" width="#{length.round(1)}" height="#{BAR}" fill="#{color(variant)}"/>) +
        text(left + length + 4, top + BAR - 4, format_value(value))
    end

    def column_x(metric) = LABEL_WIDTH + (metric * COLUMN_WIDTH)

    def color(variant)
      return BASELINE_COLOR if variant == "baseline"

      COLORS[(@variants - ["baseline"]).index(variant) % COLORS.size]
    end

    # 3 significant digits: 0.52, 21.0, 316, 2070.
    def format_value(value)
      return format("%.0f", value) if value >= 100

      format("%.#{value >= 10 ? 1 : 2}f", value)
    end

    # A <text> at +left+ whose baseline is at +baseline+; +style+ takes
    # size, weight, fill and anchor.
    def text(left, baseline, content, **style)
      attributes = { fill: "#222" }.merge(style).map { |key, value| %(#{STYLE.fetch(key)}="#{value}") }
      %(<text x="#{left.round(1)}" y="#{baseline}" #{attributes.join(' ')}>#{CGI.escapeHTML(content.to_s)}</text>)
    end
  end
end
