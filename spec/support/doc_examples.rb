# frozen_string_literal: true

require "English"
require "rbconfig"
require "ripper"
require "set" # YARD uses Set without requiring it
require "tmpdir"
require_relative "spawn_helpers"

# The code shown to users, run as written: the ```ruby blocks of a Markdown
# file and the YARD @example tags of Ruby files.
#
# In Markdown, a fenced block runs when its info string is +ruby+; blocks of
# any other language (+sh+, +text+, none) never do. A Ruby block that must
# not run is fenced <tt>```ruby no-run</tt> (GitHub still highlights it as
# Ruby).
#
# Each block runs in a new Ruby process, in an empty temporary directory,
# after doc_example_prelude.rb (which defines the placeholders the docs
# use). Two kinds of comment are checked, on a line whose code is a
# complete expression:
# - <tt>code # => value</tt>: +code+ must equal +value+, the Ruby
#   expression at the start of the comment (what follows it after ": ",
#   ", ", two spaces or " (" is explanation);
# - <tt>code # raises SomeError</tt>: +code+ must raise it.
module DocExamples
  Block = Struct.new(:file, :line, :title, :source) do
    def label = "#{file}:#{line} #{title}"

    # Lines with a comment to check.
    def checks = source.lines.count { |l| DocExamples.check_comment(l) }
  end

  PRELUDE = File.expand_path("doc_example_prelude.rb", __dir__)
  SEPARATORS = /(?=: |, |  | \()/
  MARKER = "doc example ran; comments checked:"

  module_function

  # The ```ruby blocks of the Markdown +text+ (from +file+), except no-run ones.
  def markdown_blocks(file, text)
    blocks = []
    open = nil
    text.each_line.with_index(1) do |line, number|
      if open.nil?
        open = { run: runs?(line), line: number + 1, source: +"" } if line.start_with?("```")
      elsif line.start_with?("```")
        blocks << Block.new(file, open[:line], "```ruby block", open[:source]) if open[:run]
        open = nil
      else
        open[:source] << line
      end
    end
    blocks
  end

  # Whether the fence line +line+ opens a block to run.
  def runs?(line)
    info = line.delete_prefix("```").split
    info.first == "ruby" && !info.include?("no-run")
  end

  # The @example tags of the documented objects in the Ruby files +paths+,
  # named by their path relative to +root+.
  def yard_blocks(paths, root)
    require "yard"
    YARD::Registry.clear
    YARD::Logger.instance.level = YARD::Logger::ERROR
    YARD.parse(paths)
    YARD::Registry.all.flat_map do |object|
      object.tags(:example).map do |tag|
        title = [object.path, tag.name].reject { |t| t.to_s.empty? }.join(": ")
        Block.new(object.file.delete_prefix("#{root}/"), object.line, title, "#{tag.text}\n")
      end
    end
  end

  # [kind, code, what the comment states] for a line with a comment to
  # check, else nil. The comment is found with Ripper, so a "#" inside a
  # String is not taken for one.
  def check_comment(line)
    comment = Ripper.lex(line).find { |(_, type, _)| type == :on_comment }
    return unless comment

    code = line.byteslice(0, comment[0][1]).strip
    return if code.empty?

    text = comment[2].strip
    if (expected = text[/\A#\s*=>\s*(.+)/, 1]) then [:equal, code, expected_value(expected)]
    elsif (error = text[/\A#\s*raises\s+([A-Z][\w:]*)/, 1]) then [:raises, code, error]
    end
  end

  # The longest start of +text+, cut before a separator or at its end, that
  # is a Ruby expression.
  def expected_value(text)
    cuts = text.enum_for(:scan, SEPARATORS).map { $LAST_MATCH_INFO.begin(0) } << text.size
    cuts.sort.reverse_each do |cut|
      candidate = text[0, cut].strip
      return candidate if Ripper.sexp(candidate)
    end
    text.strip
  end

  # +source+ with every line that has a comment to check replaced by a call
  # that checks it, on the same line (line numbers stay those of the file).
  def instrument(source, first_line)
    source.lines.each_with_index.map do |line, index|
      kind, code, stated = check_comment(line)
      number = first_line + index
      case kind
      when :equal then "DocExampleChecks.equal(#{number}, #{code.inspect}, (#{code}), (#{stated}))\n"
      when :raises then "DocExampleChecks.raises(#{number}, #{code.inspect}, #{stated}) { #{code} }\n"
      else line
      end
    end.join
  end

  # Runs +block+ in a new Ruby process (under +wrapper+, e.g. an unshare
  # command) in a new temporary directory, killed after +timeout+ seconds;
  # returns [output, success?].
  def run(block, lib:, wrapper: [], timeout: 120)
    script = "eval(#{instrument(block.source, block.line).inspect}, TOPLEVEL_BINDING, " \
             "#{block.file.inspect}, #{block.line})\nputs \"#{MARKER} \#{DocExampleChecks.count}\"\n"
    argv = [*wrapper, RbConfig.ruby, "-I", lib, "-r", PRELUDE, "-e", script]
    Dir.mktmpdir("numo-doc-example") do |dir|
      output, status = SpawnHelpers.capture_within(timeout, argv, chdir: dir)
      status ? [output, status.success?] : ["killed after #{timeout} s:\n#{output}", false]
    end
  end

  # A command prefix that runs a program with a /dev/shm of its own (an
  # empty tmpfs in a new mount namespace), so that the docs' named segments
  # can never meet the user's; nil where the system does not allow it.
  def private_shm_wrapper
    unshare = ["unshare", "--mount", "--propagation", "private"]
    unshare.insert(1, "--map-root-user") unless Process.euid.zero?
    wrapper = [*unshare, "sh", "-c", 'mount -t tmpfs -o mode=1777 numo-doc-shm /dev/shm && exec "$@"', "sh"]
    system(*wrapper, "true", out: File::NULL, err: File::NULL) ? wrapper : nil
  rescue SystemCallError
    nil
  end
end
