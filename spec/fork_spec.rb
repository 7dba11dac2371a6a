# frozen_string_literal: true

require "parallel"

RSpec.describe "Shared arrays across fork" do
  it "runs the seed scenario: two children fill a[i, true, true] of the parent's [2,3,3] array" do
    a = Numo::DFloat.new_shared(2, 3, 3)
    fork_each([0, 1]) { |i| a[i, true, true] = Numo::DFloat.new(3, 3).seq(10 * i) }
    expect(a[0, true, true]).to eq(Numo::DFloat.new(3, 3).seq(0))
    expect(a[1, true, true]).to eq(Numo::DFloat.new(3, 3).seq(10))
  end

  it "works with the parallel gem's processes" do
    a = Numo::Int32.new_shared(8, 100)
    Parallel.each(0...8, in_processes: 2) { |i| a[i, true] = Numo::Int32.new(100).seq(i) }
    expect(a.sum(axis: 1).to_a).to eq((0...8).map { |i| (0...100).sum + (100 * i) })
  end

  it "shows a child's writes to other children forked before them" do
    a = Numo::Int64.new_shared(2)
    reader_ready, writer_go = IO.pipe
    writer = fork do
      reader_ready.close
      a[0] = 41
      writer_go.puts("written")
      writer_go.close
      exit!(0)
    end
    writer_go.close
    reader = fork do
      reader_ready.gets
      exit!(a[0] == 41 ? 0 : 1)
    end
    Process.wait(writer)
    _, status = Process.wait2(reader)
    reader_ready.close
    expect(status).to be_success
  end

  it "shows the parent's later writes to a running child" do
    a = Numo::UInt8.new_shared(1)
    to_child_r, to_child_w = IO.pipe
    from_child_r, from_child_w = IO.pipe
    pid = fork do
      to_child_w.close
      to_child_r.gets
      from_child_w.puts(a[0])
      exit!(0)
    end
    to_child_r.close
    from_child_w.close
    a[0] = 200
    to_child_w.puts("go")
    seen = from_child_r.gets.to_i
    Process.wait(pid)
    expect(seen).to eq(200)
  end

  it "keeps sharing across nested forks" do
    a = Numo::SFloat.new_shared(3)
    pid = fork do
      grandchild = fork do
        a[2] = 3
        exit!(0)
      end
      Process.wait(grandchild)
      a[1] = a[2] - 1
      exit!(0)
    end
    Process.wait(pid)
    a[0] = 1
    expect(a.to_a).to eq([1.0, 2.0, 3.0])
  end

  it "shares arrays made by to_shared and views of them" do
    src = Numo::DFloat.new(4, 4).seq
    a = src.to_shared
    column = a[true, 1]
    fork_each([0]) { column.inplace * -1 }
    expect(a[true, 1].to_a).to eq([-1.0, -5.0, -9.0, -13.0])
    expect(src[true, 1].to_a).to eq([1.0, 5.0, 9.0, 13.0])
  end
end
