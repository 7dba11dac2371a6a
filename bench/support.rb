# frozen_string_literal: true

# Shared helpers for the benchmarks: timing medians and printing tables.
# Benchmarks print; they assert nothing.
require "fiddle"
require "fileutils"
require "json"

module Bench
  module_function

  def now
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  # Median wall time in seconds of +runs+ calls of the block (after one
  # warm-up call). The block may return a number of inner iterations; the
  # time is then divided by it.
  def median_time(runs: 7)
    yield
    times = Array.new(runs) do
      GC.start
      t0 = now
      iterations = yield
      elapsed = now - t0
      iterations.is_a?(Integer) && iterations.positive? ? elapsed / iterations : elapsed
    end
    times.sort[times.size / 2]
  end

  def median(values)
    sorted = values.sort
    mid = sorted.size / 2
    sorted.size.odd? ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2.0
  end

  # Writes +data+ as JSON to tmp/bench/<name>.json (for charts and notes).
  def write_results(name, data)
    dir = File.expand_path("../tmp/bench", __dir__)
    FileUtils.mkdir_p(dir)
    path = File.join(dir, "#{name}.json")
    File.write(path, JSON.pretty_generate(data))
    puts
    puts "results written to #{path}"
  end

  def format_time(seconds)
    if seconds < 1e-3 then format("%.2f µs", seconds * 1e6)
    elsif seconds < 1 then format("%.2f ms", seconds * 1e3)
    else
      format("%.3f s", seconds)
    end
  end

  # Prints a Markdown table: +rows+ is an array of arrays of strings.
  def table(headers, rows)
    widths = headers.each_index.map { |i| ([headers[i]] + rows.map { |r| r[i] }).map(&:size).max }
    line = ->(cells) { "| #{cells.each_with_index.map { |c, i| c.ljust(widths[i]) }.join(' | ')} |" }
    puts line.call(headers)
    puts "|#{widths.map { |w| '-' * (w + 2) }.join('|')}|"
    rows.each { |r| puts line.call(r) }
  end

  def ratio(value, reference)
    format("%.2fx", value / reference)
  end

  def format_bytes(bytes)
    bytes >= 1 << 20 ? format("%.1f MiB", bytes.fdiv(1 << 20)) : format("%.0f KiB", bytes.fdiv(1024))
  end

  # Gives the free memory of malloc's heap back to the system, so that RSS
  # measures what is in use (free heap left by earlier measurements would
  # otherwise be reused without showing).
  def release_free_memory
    @malloc_trim ||= Fiddle::Function.new(Fiddle.dlopen(nil)["malloc_trim"], [Fiddle::TYPE_SIZE_T], Fiddle::TYPE_INT)
    @malloc_trim.call(0)
  end

  # This process's resident set and its high-water mark, in bytes.
  # The page costs of this machine and what handing a result over costs
  # each way, measured by bench/page_costs.c (compiled here into tmp/):
  # its report, to print beside every table.
  def page_costs(rounds: 7)
    source = File.expand_path("page_costs.c", __dir__)
    binary = File.expand_path("../tmp/page_costs", __dir__)
    FileUtils.mkdir_p(File.dirname(binary))
    unless File.exist?(binary) && File.mtime(binary) >= File.mtime(source)
      system("cc", "-O2", "-o", binary, source, exception: true)
    end
    IO.popen([binary, rounds.to_s], &:read)
  end

  def rss = status_kib("VmRSS") * 1024
  def peak_rss = status_kib("VmHWM") * 1024

  # Resets VmHWM to the current RSS (Linux: /proc/self/clear_refs).
  def reset_peak_rss
    File.write("/proc/self/clear_refs", "5")
  end

  def status_kib(field)
    File.foreach("/proc/self/status").find { |l| l.start_with?("#{field}:") }.split[1].to_i
  end

  # Progress of a long run on stderr (stdout keeps only the results):
  #
  #   progress = Bench::Progress.new("bench:memmap", 7)
  #   7.times { |i| measure(i); progress.step("memmap run #{i + 1}") }
  #   progress.finish
  #
  # On a terminal the line is rewritten in place; elsewhere (a log, CI) a
  # line is written at most every +every+ seconds, and at the end.
  class Progress
    def initialize(label, total, io: $stderr, every: 5)
      @label = label
      @total = total
      @io = io
      @every = every
      @done = 0
      @started = @shown = Bench.now
    end

    # One of the +total+ steps is done; +what+ names it.
    def step(what = nil)
      @done += 1
      line = "#{@label}: #{@done}/#{@total} (#{(100 * @done / @total.to_f).round}%) #{what}, " \
             "#{Bench.format_time(Bench.now - @started)}#{remaining}"
      if @io.tty? then @io.print("\r#{line}\e[K")
      elsif @done == @total || Bench.now - @shown >= @every
        @io.puts(line)
        @shown = Bench.now
      end
    end

    def finish
      @io.puts if @io.tty?
    end

    private

    def remaining
      return "" if @done >= @total

      ", about #{Bench.format_time((Bench.now - @started) / @done * (@total - @done))} left"
    end
  end
end
