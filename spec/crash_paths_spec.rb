# frozen_string_literal: true

# Paths that used to crash or kill the process, each run in a process of its
# own (a crash there fails the example instead of the suite).
RSpec.describe "Paths that must not crash" do
  it "survives free during an iteration over the array, in the same thread or another" do
    out = run_ruby(<<~RUBY)
      Thread.report_on_exception = false
      a = Numo::DFloat.new_shared(1_000_000).seq
      seen = 0
      a.each { |x| a.free if x == 10; seen += 1 }
      b = Numo::DFloat.new_shared(2_000_000).seq
      sum = Thread.new { b.sum }
      b.free
      sum.join rescue nil
      p [seen, a.frozen?, a.shared?, b.shared?]
    RUBY
    expect(out).to eq("[1000000, true, false, false]\n")
  end

  it "refuses initialize_copy, initialize_dup and initialize_clone on a shared array, and dups it" do
    a = Numo::DFloat.new_shared(3).seq
    bigger = Numo::DFloat.new(1_000_000).seq
    %i[initialize_copy initialize_dup initialize_clone].each do |name|
      expect { a.send(name, bigger) }
        .to raise_error(FrozenError, "cannot re-initialize a shared array"), name.to_s
    end
    expect(a.to_a).to eq([0.0, 1.0, 2.0])
    copy = a.dup
    expect(copy).to eq(a)
    expect(copy).not_to be_shared
    expect(a.clone).not_to be_shared
  end

  it "refuses marshal data loaded into a shared, a zero-size shared or a freed array" do
    data = Numo::DFloat.new(1000).seq.marshal_dump
    [Numo::DFloat.new_shared(3), Numo::DFloat.new_shared(0)].each do |array|
      expect { array.marshal_load(data) }
        .to raise_error(FrozenError, "cannot re-initialize a shared array with marshal data")
    end
    freed = Numo::DFloat.new_shared(3).free
    expect { freed.marshal_load(data) }.to raise_error(RuntimeError, /was freed/)
  end

  it "survives threads killed while the extension raises (50 kills), building exceptions eagerly" do
    out = run_ruby(<<~RUBY)
      50.times do |i|
        t = Thread.new do
          loop do
            Numo::NArray.open_shared("bad name!")
          rescue ArgumentError
            nil
          end
        end
        sleep(0.0001 * (i % 7))
        t.kill
        t.join
      end
      puts :alive
    RUBY
    expect(out).to eq("alive\n")
  end

  it "survives the main thread exiting while another thread is raising from the extension" do
    10.times do
      out = run_ruby(<<~RUBY)
        Thread.new { loop { Numo::NArray.open_shared("bad name!") rescue nil } }
        sleep 0.001
        puts :exiting
      RUBY
      expect(out).to eq("exiting\n")
    end
  end
end
